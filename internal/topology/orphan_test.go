package topology_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// A fence is orphaned only when nothing says a running replica may hold
// it: the asking replica's own record is there (the bucket is written),
// each other live replica running the sink recorded its fences and none
// is it, no pull waits on the sink's consumers, and they still carry it.
func TestOrphanedFence(t *testing.T) {
	const owner, mine = "owner-fence", "my-fence"
	me := topology.Replica{ID: "me", Sinks: []string{"crm"}, Fences: map[string]string{"crm": mine}}
	tests := []struct {
		name     string
		replicas []topology.Replica
		pulling  bool
		ask      string
		want     bool
	}{
		{name: "its replicas are gone", replicas: []topology.Replica{me}, ask: owner, want: true},
		{name: "no record, not even its own (the bucket not written)", ask: owner},
		{name: "its own record without fences (binding)", ask: owner, replicas: []topology.Replica{{ID: "me", Sinks: []string{"crm"}}}},
		{name: "a replica of its config runs", ask: owner,
			replicas: []topology.Replica{me, {ID: "o", Sinks: []string{"crm"}, Fences: map[string]string{"crm": owner}}}},
		{name: "a replica binding (or of a version before fences were recorded)", ask: owner,
			replicas: []topology.Replica{me, {ID: "b", Sinks: []string{"crm"}}}},
		{name: "a replica that bound other sinks with it, not this one", ask: owner, want: true,
			replicas: []topology.Replica{me, {ID: "c", Sinks: []string{"chabok"}, Fences: map[string]string{"chabok": owner}}}},
		{name: "a pull waits, no record holds it", replicas: []topology.Replica{me}, pulling: true, ask: owner},
		{name: "the consumer carries another fence now", replicas: []topology.Replica{me}, ask: "gone-before"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			js, topo := start(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cons, err := topo.EnsureSink(ctx, js, "crm", topology.ConsumerSettings{AckWait: 30 * time.Second, MaxAckPending: 100, Fence: owner})
			if err != nil {
				t.Fatal(err)
			}
			kv, err := topo.EnsureReplicas(ctx, js)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range tt.replicas {
				if err := topology.PutReplica(ctx, kv, r); err != nil {
					t.Fatal(err)
				}
			}
			if tt.pulling {
				// A pull request left waiting on the server, as a replica
				// that owns the sink keeps one.
				if _, err := cons.Events[0].Fetch(1, jetstream.FetchMaxWait(25*time.Second)); err != nil {
					t.Fatal(err)
				}
				testenv.Eventually(t, 20*time.Second, "the pull waiting on the server", func() bool {
					info, err := cons.Events[0].Info(ctx)
					return err == nil && info.NumWaiting > 0
				})
			}
			got, err := topo.OrphanedFence(ctx, js, "crm", tt.ask, "me")
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("orphaned %v, want %v", got, tt.want)
			}
		})
	}
}
