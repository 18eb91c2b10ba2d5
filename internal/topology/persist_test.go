package topology_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/topology"
)

// The deliveries stream's writes are flushed in batches by the server
// (AsyncPersistMode) where the server allows it, a single file-backed
// copy: a record is a lookup's detail, and flushing each one in place was
// a write syscall per delivery. An existing stream keeps the mode it was
// made with (the server refuses to change it), and a stream the server
// cannot flush so (memory storage) is made in the default mode.
func TestDeliveriesStreamPersistMode(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	mode := func(t *testing.T, js jetstream.JetStream, topo topology.Topology) jetstream.PersistModeType {
		t.Helper()
		s, err := js.Stream(ctx, topo.DeliveriesStream())
		if err != nil {
			t.Fatal(err)
		}
		return s.CachedInfo().Config.PersistMode
	}
	for _, tc := range []struct {
		name     string
		storage  string
		existing bool // the stream was made before, in the default mode
		want     jetstream.PersistModeType
	}{
		{name: "new, file", storage: "file", want: jetstream.AsyncPersistMode},
		{name: "new, memory", storage: "memory", want: jetstream.DefaultPersistMode},
		{name: "made before, file", storage: "file", existing: true, want: jetstream.DefaultPersistMode},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, js := jetStream(t)
			cfg := config.Default().Streams
			cfg.Storage = tc.storage
			cfg.RecordDeliveries = true
			topo := topology.New(cfg)
			if tc.existing {
				if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: topo.DeliveriesStream(),
					Subjects: []string{topo.Prefix() + ".deliveries.>"}}); err != nil {
					t.Fatal(err)
				}
			}
			for range 2 { // every replica ensures at every start
				if err := topo.Ensure(ctx, js); err != nil {
					t.Fatal(err)
				}
			}
			if got := mode(t, js, topo); got != tc.want {
				t.Errorf("persist mode %v, want %v", got, tc.want)
			}
		})
	}
}
