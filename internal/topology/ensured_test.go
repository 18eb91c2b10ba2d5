package topology

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/embedded"
)

// ensuredJetStream starts an embedded JetStream server, connects to it and
// makes the default config's streams: what the lead's race tests share.
func ensuredJetStream(ctx context.Context, t *testing.T) (jetstream.JetStream, Topology) {
	t.Helper()
	s, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	topo := New(config.Default().Streams)
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	return js, topo
}
