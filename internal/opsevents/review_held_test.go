package opsevents

import (
	"fmt"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Review: what a type's bucket holds back is counted per (type, sink),
// and a dead letter's sink is the producer's to name (an unknown
// destination is dead-lettered for the name the event carries). A storm
// of events naming a different missing sink each must not grow the
// counts (and the summaries a quiet storm publishes, one per key) with
// every name: they are bounded, past maxHeld the names of sinks not
// configured are counted together, without a sink.
func TestReviewHeldBackCountsAreBounded(t *testing.T) {
	cfg := config.Default()
	cfg.Sinks = []config.Sink{{Name: "shop"}}
	cfg.OpsEvents = config.OpsEvents{Enabled: true, PerMinute: 1, Burst: 1, Buffer: 16}
	p := New(cfg, nil, nil)
	const n = 20_000
	for i := range n {
		p.DeadLetterStored(&dlq.Record{Sink: fmt.Sprintf("missing-%d", i), Reason: outcome.UnknownDestination,
			EventID: fmt.Sprintf("e%d", i), EventType: envelope.TypeTrack, Origin: uint64(i + 1), FirstAttempt: time.Now(), LastAttempt: time.Now()})
	}
	p.mu.Lock()
	held, total := len(p.held), 0
	for _, h := range p.held {
		total += h.n
	}
	p.mu.Unlock()
	if held > maxHeld+1 {
		t.Errorf("%d (type, sink) counts held for %d dead letters naming distinct sinks, want at most %d", held, n, maxHeld+1)
	}
	if total != n-1 {
		t.Errorf("%d held back in all, want %d (the burst of 1 published)", total, n-1)
	}
}
