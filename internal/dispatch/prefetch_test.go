package dispatch_test

// Issue 18, "no duplicates when nothing fails": a message pulled ahead of
// the workers must not wait out ack_wait in the client's buffer, or
// JetStream hands it out again while the first copy is still queued, and
// the vendor gets the event twice.

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// webhookRequestsPerID counts, per envelope id, the 2xx requests that
// carried it: a single event's body or a batch's array.
func webhookRequestsPerID(t *testing.T, e *testenv.Env) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, r := range e.Emu.Vendor(emulator.Webhook).Requests() {
		if r.Status/100 != 2 {
			continue
		}
		var one struct{ ID string }
		if json.Unmarshal(r.Body, &one) == nil {
			out[one.ID]++
			continue
		}
		var many []struct{ ID string }
		if err := json.Unmarshal(r.Body, &many); err != nil {
			t.Fatalf("webhook body %s: %v", r.Body, err)
		}
		for _, m := range many {
			out[m.ID]++
		}
	}
	return out
}

// A slow but healthy vendor, a short ack_wait and a backlog larger than
// the workers take within it: every event reaches the vendor exactly once.
// Before the fix the client buffered 32 messages with their ack timers
// running and no keep-alive: at concurrency 1, 150 ms a request and a 2 s
// ack_wait, 60 events gave 34 duplicate deliveries.
func TestBufferedMessagesNeverOutliveAckWait(t *testing.T) {
	cases := []struct {
		name        string
		partitions  int
		concurrency int
		batch       *config.Batch
		latency     time.Duration
		events      int
	}{
		// The scenario.
		{name: "one worker", partitions: 1, concurrency: 1, latency: 150 * time.Millisecond, events: 60},
		// The defaults (concurrency 8, a vendor answering in a quarter to a
		// third of ack_wait), scaled to a 2 s ack_wait.
		{name: "defaults scaled", partitions: 1, concurrency: 8, latency: 600 * time.Millisecond, events: 100},
		{name: "partitions", partitions: 2, concurrency: 1, latency: 150 * time.Millisecond, events: 60},
		{name: "batching", partitions: 1, concurrency: 1, batch: &config.Batch{MaxItems: 5, MaxWait: 50 * time.Millisecond},
			latency: 600 * time.Millisecond, events: 60},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := testenv.NewPartitioned(t, tc.partitions)
			hook := e.Sink("hook", emulator.Webhook, nil, nil)
			hook.Concurrency, hook.Batch = tc.concurrency, tc.batch
			e.Emu.Vendor(emulator.Webhook).SetFault(emulator.Fault{Status: 200, Latency: tc.latency})
			d := e.Start([]config.Sink{hook}, []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"hook"}}},
				func(c *config.Dispatcher) { c.AckWait = 2 * time.Second })
			ids := make([]string, tc.events)
			for i := range ids {
				env := testenv.Track(t, "order_paid", fmt.Sprintf("user-%d", i), envelope.WithSubject(fmt.Sprintf("user-%d", i)))
				ids[i] = env.ID
				e.Publish(env)
			}
			testenv.Eventually(t, 60*time.Second, "every event delivered", func() bool {
				return d.Tally.DeliveredTo("hook") >= tc.events
			})
			testenv.Eventually(t, 10*time.Second, "the consumers idle", func() bool { return e.Idle("hook") })
			seen := webhookRequestsPerID(t, e)
			dups := 0
			for _, id := range ids {
				switch n := seen[id]; {
				case n == 0:
					t.Errorf("%s never reached the vendor", id)
				case n > 1:
					dups += n - 1
				}
			}
			if dups > 0 {
				t.Errorf("%d duplicate deliveries of %d events with nothing failing", dups, tc.events)
			}
		})
	}
}
