package dispatch_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Issue 18: the Metrix gateway answers 2xx to a second message of one user
// at the same time and drops it. Two replicas deliver bursts of each
// user's events in one millisecond (same producer time), events 1 ms apart
// (each with its auto-registration user message), and events without a
// time published at once (same receipt millisecond); unordered, batched
// and ordered. The emulator, which drops as Metrix does, must drop none;
// with order: by_user the times also follow each user's publish order.
func TestMetrixGatewayDropsNothingFromTwoReplicas(t *testing.T) {
	tests := []struct {
		name  string
		sink  func(config.Sink) config.Sink
		order bool
	}{
		{"unordered", func(s config.Sink) config.Sink { return s }, false},
		{"batched", func(s config.Sink) config.Sink { return batched(s, 50, 20*time.Millisecond) }, false},
		{"ordered", func(s config.Sink) config.Sink { s.Order = &config.Order{Key: config.OrderByUser}; return s }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testenv.New(t)
			sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
			sink.Concurrency = 8
			sink = tt.sink(sink)
			a := e.Start([]config.Sink{sink}, gatewayRoute)
			b := e.Start([]config.Sink{sink}, gatewayRoute)

			users := []string{"u0", "u1", "u2", "u3"}
			const burst, apart, untimed = 15, 10, 15
			t0 := time.Now().Add(-time.Minute).Truncate(time.Millisecond)
			order := map[string][]string{} // user → ids, publish order
			track := func(u string, opts ...envelope.Option) *envelope.Envelope {
				env := testenv.Track(t, "order_paid", u, append(opts, envelope.WithSubject(u))...)
				order[u] = append(order[u], env.ID)
				return env
			}
			for range burst { // one millisecond each user
				for _, u := range users {
					e.Publish(track(u, envelope.WithTime(t0)))
				}
			}
			for i := range apart { // 1 ms apart: each one's registration wants the previous one's time
				for _, u := range users {
					e.Publish(track(u, envelope.WithTime(t0.Add(time.Duration(i+1)*time.Millisecond))))
				}
			}
			// No time: receipt times, published at once to share milliseconds.
			var acks []jetstream.PubAckFuture
			for range untimed {
				for _, u := range users {
					env := track(u)
					raw, err := env.Marshal()
					if err != nil {
						t.Fatal(err)
					}
					f, err := e.JS.PublishAsync(e.Topo.EventSubjectFor(env.Type, env.PartitionKey()), raw, jetstream.WithMsgID(env.ID))
					if err != nil {
						t.Fatal(err)
					}
					acks = append(acks, f)
				}
			}
			for _, f := range acks {
				select {
				case <-f.Ok():
				case err := <-f.Err():
					t.Fatal(err)
				case <-time.After(10 * time.Second):
					t.Fatal("publish not acknowledged in 10 s")
				}
			}
			n := len(users) * (burst + apart + untimed)
			testenv.Eventually(t, 30*time.Second, "every event at the vendor", func() bool { return len(gatewayIDs(t, e)) == n })
			if a.Tally.DeliveredTo("gateway") == 0 && !tt.order || b.Tally.DeliveredTo("gateway") == 0 && !tt.order {
				t.Errorf("work not shared: a %d, b %d", a.Tally.DeliveredTo("gateway"), b.Tally.DeliveredTo("gateway"))
			}

			v := e.Emu.Vendor(emulator.MetrixGateway)
			if dropped := v.Dropped(); len(dropped) > 0 {
				t.Errorf("the vendor dropped %d of %d events' messages (same user, same time); first: %+v", len(dropped), n, dropped[0])
			}
			times := map[string]int64{} // message id → time
			for _, r := range v.Requests() {
				if r.Status != 200 {
					continue
				}
				var body struct {
					Messages []struct {
						Type, ID string
						Time     int64
					}
				}
				if err := json.Unmarshal(r.Body, &body); err != nil {
					t.Fatal(err)
				}
				for i, m := range body.Messages {
					if prev, ok := times[m.ID]; ok && prev != m.Time {
						t.Errorf("message %s sent at %d, then at %d", m.ID, prev, m.Time)
					}
					times[m.ID] = m.Time
					if m.Type == "user" && strings.HasSuffix(m.ID, ":user") && m.Time >= body.Messages[i+1].Time {
						t.Errorf("registration %s at %d, not before its event's %d", m.ID, m.Time, body.Messages[i+1].Time)
					}
				}
			}
			var late int64
			for _, u := range users {
				var prev int64
				var inverted []string
				for i, id := range order[u] {
					at := times[id]
					if i < burst+apart {
						late = max(late, at-t0.UnixMilli()-int64(max(i-burst+1, 0)))
					}
					if i > 0 && at <= prev {
						inverted = append(inverted, fmt.Sprintf("#%d at %d after %d", i, at, prev))
					}
					prev = at
				}
				if tt.order && len(inverted) > 0 {
					t.Errorf("user %s: times out of publish order: %v", u, inverted)
				}
				if len(inverted) > 0 {
					t.Logf("user %s: %d events' times out of publish order", u, len(inverted))
				}
			}
			retried := 0
			for _, d := range []*testenv.Dispatcher{a, b} {
				_, _, counts := d.Tally.Snapshot()
				for _, c := range counts {
					retried += c.Retried
				}
			}
			t.Logf("%d events of %d users; a timed event's time moved by at most %d ms; delivered by a %d, b %d; %d retries",
				n, len(users), late, a.Tally.DeliveredTo("gateway"), b.Tally.DeliveredTo("gateway"), retried)
		})
	}
}
