package dlq_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/topology"
)

// When JetStream's storage is spent (the server's max_file_store, or the
// disk it stands for), purging dead letters is how an operator frees it:
// dead letters are kept 30 days and copy every failed event. A purge must
// work then. It writes a tombstone per record (a new message, a subject
// rollup), which the server refuses like any write while its storage is
// over the limit ("insufficient resources"), so nothing can be purged, and
// the storage stays full.
func TestPurgeFreesAFullStore(t *testing.T) {
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: t.TempDir(), JetStreamMaxStore: 4 << 20, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
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
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo := topology.New(config.Default().Streams)
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	// Dead letters of 100 KB until the storage is spent.
	w := dlq.NewWriter(js, topo)
	data := bytes.Repeat([]byte("x"), 100<<10)
	written := 0
	var full error
	for i := range 200 {
		_, err := w.Write(ctx, &dlq.Record{Sink: "chabok", Reason: outcome.VendorRejected, Status: 400,
			EventID: fmt.Sprintf("e-%d", i), EventType: "chapar.track", Origin: uint64(i + 1), LastAttempt: time.Now(), Data: data})
		if err != nil {
			full = err
			break
		}
		written++
	}
	if full == nil {
		t.Fatalf("wrote %d dead letters without filling the storage", written)
	}
	t.Logf("storage full after %d dead letters: %v", written, full)
	st := dlq.NewStore(js, topo)
	n, err := st.Purge(ctx, dlq.Filter{Sink: "chabok"})
	if err != nil || n != written {
		t.Errorf("purge of a full store: purged %d of %d, error %v; the dead letters cannot be purged to free the storage", n, written, err)
	}
	stream, err := js.Stream(ctx, topo.DeadLetterStream())
	if err != nil {
		t.Fatal(err)
	}
	if b := stream.CachedInfo().State.Bytes; b > 1<<20 {
		t.Errorf("the dead-letter stream still holds %d bytes after the purge", b)
	}
}
