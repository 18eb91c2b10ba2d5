package opsevents

import (
	"sync"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

type counted struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counted) OpsEvent(typ, outcome string) {
	c.mu.Lock()
	c.n[typ+"/"+outcome]++
	c.mu.Unlock()
}

// Reporting never waits for the broker: with nothing publishing (no Run)
// and a queue of 2, the third and later events are dropped at once and
// counted, and the caller returns.
func TestAFullQueueDropsAndCountsWithoutWaiting(t *testing.T) {
	cfg := config.Default()
	cfg.Sinks = []config.Sink{{Name: "shop"}}
	cfg.OpsEvents = config.OpsEvents{Enabled: true, PerMinute: 60, Burst: 100, Buffer: 2}
	c := &counted{n: map[string]int{}}
	p := New(cfg, nil, c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range 5 {
			p.DeadLetterStored(&dlq.Record{Sink: "shop", Reason: outcome.VendorRejected, EventID: string(rune('a' + i)),
				EventType: envelope.TypeTrack, Origin: uint64(i + 1), FirstAttempt: time.Now(), LastAttempt: time.Now()})
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("reporting a dead letter waited on a full queue")
	}
	if got := c.n[envelope.TypeOpsDeadLettered+"/"+Dropped]; got != 3 || len(p.queue) != 2 {
		t.Errorf("%d dropped, %d queued; want 3 and 2", got, len(p.queue))
	}
	// An ops event's dead letter is not reported at all.
	p.DeadLetterStored(&dlq.Record{Sink: "shop", Reason: outcome.VendorRejected, EventID: "x", EventType: envelope.TypeOpsDeadLettered})
	if got := c.n[envelope.TypeOpsDeadLettered+"/"+Dropped]; got != 3 {
		t.Errorf("an ops event's dead letter was reported: %d dropped", got)
	}
}
