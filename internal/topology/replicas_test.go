package topology_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/topology"
)

// The replicas running a sink are the live presence records naming it,
// oldest first; a deleted record (a clean shutdown) is not one; with no
// bucket yet, there are none.
func TestReplicasRunningASink(t *testing.T) {
	js, topo := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if got, err := topo.ReplicasRunning(ctx, js, "crm"); err != nil || len(got) != 0 {
		t.Fatalf("before any dispatcher: %v %v, want none", got, err)
	}
	kv, err := topo.EnsureReplicas(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	for _, r := range []topology.Replica{
		{ID: "b", Host: "h2", PID: 2, Started: now, Sinks: []string{"chabok", "crm"}},
		{ID: "a", Host: "h1", PID: 1, Started: now.Add(-time.Minute), Sinks: []string{"crm"}},
		{ID: "c", Host: "h3", PID: 3, Started: now, Sinks: []string{"chabok"}},
		{ID: "gone", Host: "h4", PID: 4, Started: now, Sinks: []string{"crm"}},
	} {
		if err := topology.PutReplica(ctx, kv, r); err != nil {
			t.Fatal(err)
		}
	}
	if err := topology.DeleteReplica(ctx, kv, "gone"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		sink string
		want []string
	}{
		{"crm", []string{"a", "b"}},
		{"chabok", []string{"b", "c"}},
		{"kenar", nil},
	} {
		got, err := topo.ReplicasRunning(ctx, js, tc.sink)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range got {
			ids = append(ids, r.ID)
		}
		if !slices.Equal(ids, tc.want) {
			t.Errorf("replicas running %s: %v, want %v", tc.sink, ids, tc.want)
		}
	}
}
