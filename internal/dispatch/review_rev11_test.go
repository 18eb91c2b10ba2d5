package dispatch_test

// Review of b3e1827 and 0e42e13 (RestoreLead widens to the stream's
// subjects; a consumer filtered on its stream's subjects reads every
// subject, so a new lead with one is neither held nor swept).

import (
	"context"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Suspicion 2: a sink added while the old lead had a backlog (the old
// lead paused by an operator, or stuck behind its vendor: its consumer
// pulls nothing) starts above part of that backlog. A later config
// drops the old lead and lists the added sink first: it is made the
// lead in place of the old one, and the takeover is recorded. Its sweep
// (0e42e13: none at all when its consumer reads every subject; before,
// one that skipped every event) skips what its consumer "read itself"
// by subject (sweep.go: Reads(prior.Filters, subject)), though its
// consumer never read what is below its start. `sinks remove` then lets
// the old lead go on the takeover, and an invalid envelope in its
// backlog, below the new lead's start, is dead-lettered by no one.
func TestReviewRev11ANewLeadStartedAboveTheOldLeadsBacklogChecksIt(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	for _, tt := range []struct {
		name  string
		types []string // late's route's types (none: late reads every subject)
		on    string   // the invalid envelope's type subject
	}{
		{"the new lead read every subject", nil, "com.shop.order.shipped"},
		{"the new lead read its types", []string{envelope.TypeIdentify}, envelope.TypeIdentify},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel() // independent cases, each its own server
			e := testenv.New(t)
			first := e.Sink("first", emulator.Chabok, nil, nil)
			gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
			late := e.Sink("late", emulator.Chabok, nil, nil)
			purchase := config.Route{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}
			track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
			lateRoute := config.Route{Types: tt.types, Sinks: []string{"late"}}
			if err := e.Start([]config.Sink{first, gateway}, []config.Route{purchase, track}).Stop(); err != nil {
				t.Fatal(err)
			}
			// The lead pulls nothing (an operator paused it): its backlog.
			setPaused(t, e, "first", true)
			e.PublishRaw(e.Topo.EventSubject(tt.on), "bad-1", []byte(`{"not":"an envelope"}`))
			// A rollout adds late: it starts above the invalid envelope.
			if err := e.Start([]config.Sink{first, gateway, late}, []config.Route{purchase, track, lateRoute}).Stop(); err != nil {
				t.Fatal(err)
			}
			// The rollout that drops the old lead, late first: late is
			// made the lead in place of first.
			e.Start([]config.Sink{late, gateway}, []config.Route{track, lateRoute})
			if !stateOf(t, e, "late").lead {
				t.Fatal("late not made the lead")
			}
			invalid := func() bool { return len(deadLetters(t, e, dlq.Filter{Reason: "invalid_envelope"})) > 0 }
			removable := false
			testenv.Eventually(t, 30*time.Second, "the invalid envelope dead-lettered, or the old lead's removal allowed", func() bool {
				removable = leadRemovable(t, e, "first") == nil
				return removable || invalid()
			})
			if !removable {
				// Checked before the old lead may go; then it may go (no
				// wedge), and the envelope has one dead letter.
				testenv.Eventually(t, 30*time.Second, "the old lead's removal allowed once late's sweep is done", func() bool {
					return leadRemovable(t, e, "first") == nil
				})
				if n := len(deadLetters(t, e, dlq.Filter{Reason: "invalid_envelope"})); n != 1 {
					t.Errorf("the invalid envelope: %d dead letters, want 1", n)
				}
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := e.Topo.RemoveSink(ctx, e.JS, "first"); err != nil {
				t.Fatal(err)
			}
			// Observation: the sweeps are done and the old lead is gone;
			// whoever would check the envelope has had 15 s to.
			for deadline := time.Now().Add(15 * time.Second); !invalid(); time.Sleep(100 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("LOSS: `sinks remove` allowed the old lead's removal on late's takeover, and the invalid envelope in its backlog, " +
						"below late's start, is dead-lettered by no one (late's sweep skipped it as read by its consumer)")
				}
			}
		})
	}
}
