package dispatch

import (
	"fmt"
	"testing"

	"github.com/chapar-dev/chapar/internal/topology"
)

// A keyed batcher's backlog ends when every partition's consumer has
// handed over all it had: a partition caught up says nothing while another
// still has events pending behind its last, and a partition not heard
// from holds nothing back.
func TestKeyCollectorCaughtUpWaitsForEveryPartition(t *testing.T) {
	type admitted struct {
		partition int
		caughtUp  bool // the message's NumPending was 0
		want      bool
	}
	for _, tc := range []struct {
		name  string
		steps []admitted
	}{
		{"one partition, its end", []admitted{{0, false, false}, {0, false, false}, {0, true, true}}},
		{"one partition caught up, another behind", []admitted{{0, false, false}, {1, false, false}, {0, true, false}, {1, true, true}}},
		{"a caught-up partition falls behind again", []admitted{{0, true, true}, {2, false, false}, {0, false, false}, {2, true, false}, {0, true, true}}},
		{"the highest partition", []admitted{{255, false, false}, {255, true, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var c keyCollector
			for i, s := range tc.steps {
				d := &delivery{origin: topology.Origin(fmt.Sprintf("CHAPAR_EVENTS_%d", s.partition), uint64(i+1)), caughtUp: s.caughtUp}
				if got := c.caughtUp(d); got != s.want {
					t.Fatalf("step %d (partition %d, caught up %v): every partition caught up = %v, want %v", i, s.partition, s.caughtUp, got, s.want)
				}
			}
		})
	}
}
