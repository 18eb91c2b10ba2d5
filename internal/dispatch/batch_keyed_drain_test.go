package dispatch

import (
	"fmt"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/topology"
)

// A keyed batcher's backlog ends (its drain starts) when an event came
// with at least a window's worth pending behind it and, since, every
// partition's consumer has handed over all it had: live traffic the
// consumer keeps up with is no backlog, a partition caught up says
// nothing while another still has events pending behind its last, and a
// partition not heard from holds nothing back.
func TestKeyCollectorDrainsWhenABacklogEnds(t *testing.T) {
	const hold = 10
	type event struct {
		partition int
		pending   uint64 // the message's NumPending
		retry     bool
		drains    bool // the event starts a drain
	}
	for _, tc := range []struct {
		name   string
		events []event
	}{
		{"one partition, a backlog's end", []event{{0, 25, false, false}, {0, 12, false, false}, {0, 0, false, true}}},
		{"live traffic kept up with is no backlog", []event{{0, 0, false, false}, {0, 3, false, false}, {0, 9, false, false}, {0, 0, false, false}}},
		{"the end of a backlog, then live traffic", []event{{0, 10, false, false}, {0, 0, false, true}, {0, 2, false, false}, {0, 0, false, false}}},
		{"one partition caught up, another behind", []event{{0, 30, false, false}, {1, 30, false, false}, {0, 0, false, false}, {1, 4, false, false}, {1, 0, false, true}}},
		{"a caught-up partition falls behind again", []event{{2, 50, false, false}, {0, 0, false, false}, {0, 1, false, false}, {2, 0, false, false}, {0, 0, false, true}}},
		{"a retry says nothing of the events consumers", []event{{0, 50, false, false}, {0, 0, true, false}, {0, 7, false, false}, {0, 0, false, true}}},
		{"the highest partition", []event{{255, 10, false, false}, {255, 0, false, true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := keyCollector{b: &batcher{hold: hold, maxWait: time.Second}}
			now := time.Unix(1e9, 0)
			for i, e := range tc.events {
				now = now.Add(time.Millisecond)
				d := &delivery{origin: topology.Origin(fmt.Sprintf("CHAPAR_EVENTS_%d", e.partition), uint64(i+1)), pending: e.pending, retry: e.retry}
				before := c.drainUntil
				c.note(d, now)
				if started := c.drainUntil != before; started != e.drains {
					t.Fatalf("event %d (partition %d, %d pending, retry %v): drain started = %v, want %v", i, e.partition, e.pending, e.retry, started, e.drains)
				}
			}
		})
	}
}
