package topology_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/embedded"
	"github.com/chapar-dev/chapar/internal/topology"
)

// A floor names its stream instance by the stream's Created time: it must
// survive a restart of a single (file-storage) server.
func TestReviewStreamCreatedSurvivesServerRestart(t *testing.T) {
	dir := t.TempDir()
	s, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	addr := s.Addr().String()
	topo := topology.New(config.Default().Streams)
	created := func() time.Time {
		nc, err := nats.Connect("nats://" + addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := topo.Ensure(ctx, js); err != nil {
			t.Fatal(err)
		}
		st, err := js.Stream(ctx, topo.EventsStream())
		if err != nil {
			t.Fatal(err)
		}
		return st.CachedInfo().Created
	}
	before := created()
	s.Shutdown()
	s.WaitForShutdown()
	s, err = embedded.Start(embedded.Options{Listen: addr, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	after := created()
	t.Logf("created before %s after %s", before.Format(time.RFC3339Nano), after.Format(time.RFC3339Nano))
	if !before.Equal(after) {
		t.Errorf("stream Created changed across a restart: %s -> %s", before, after)
	}
}
