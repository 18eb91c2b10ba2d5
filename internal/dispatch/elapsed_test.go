package dispatch_test

// max_elapsed bounds an event's life while the breaker is open (issue 18's
// pathology matrix): a retry that comes due while the gate is shut waits
// for it, and an event whose max_elapsed has passed meanwhile is
// dead-lettered when it is next refused by the gate, not kept until a
// probe happens to pick it (before: one event per open period, so the
// sixteenth of sixteen was dead-lettered some sixteen open periods late).
// The ordered path dead-letters an expired head the same way; its lanes
// wait for the gate on their own timers, so its residual is wider and the
// pathology matrix measures it (internal/faults).

import (
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/testenv"
)

func TestMaxElapsedHoldsWhileTheBreakerIsOpen(t *testing.T) {
	for _, tc := range []struct {
		name string
		sink func(*testenv.Env) config.Sink
	}{
		{"plain", func(e *testenv.Env) config.Sink { return e.Sink("gateway", emulator.MetrixGateway, slugs, nil) }},
		{"batched", func(e *testenv.Env) config.Sink {
			return batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 2, 50*time.Millisecond)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := testenv.New(t)
			sink := tc.sink(e)
			sink.Concurrency = 4
			sink.Retry.MaxAttempts = 100 // only max_elapsed ends them
			sink.Retry.MaxElapsed = time.Second
			sink.Breaker = retry.BreakerSettings{FailureThreshold: 2, OpenTimeout: 500 * time.Millisecond}
			e.Emu.Vendor(emulator.MetrixGateway).SetFault(emulator.Fault{Status: 503})
			e.Start([]config.Sink{sink}, gatewayRoute)
			const n = 16
			publishTracks(t, e, n, "order_paid")
			testenv.Eventually(t, 40*time.Second, "every event dead-lettered", func() bool {
				return len(deadLetters(t, e, dlq.Filter{})) == n
			})
			// The bound: max_elapsed, then the breaker's cycles until the
			// sink takes the event and refuses it (while open it takes
			// nothing; each half-open window, about a concurrency's
			// worth), plus the retry schedule's resolution and the
			// broker. Before, the events waited for a probe each: one per
			// open period, 16 of them.
			bound := sink.Retry.MaxElapsed + time.Duration(n/sink.Concurrency+2)*sink.Breaker.OpenTimeout + 1500*time.Millisecond
			for _, r := range deadLetters(t, e, dlq.Filter{}) {
				if r.Reason != outcome.RetriesExhausted {
					t.Errorf("%s: reason %s, want retries_exhausted", r.EventID, r.Reason)
				}
				if life := r.LastAttempt.Sub(r.FirstAttempt); life > bound {
					t.Errorf("%s dead-lettered %s after its first attempt; max_elapsed %s allows %s (%d attempts)",
						r.EventID, life.Round(time.Millisecond), sink.Retry.MaxElapsed, bound, r.Attempts)
				}
			}
		})
	}
}
