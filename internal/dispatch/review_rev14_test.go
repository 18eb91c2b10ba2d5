package dispatch_test

// Review of d751be6 (parseRoute returns an invalid envelope's delivery
// with ok=false, for the keyed batcher's pass) and 31909c0.

import (
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// settleFrames counts, per (stream, consumer, stream sequence), every
// acknowledgement frame the dispatchers publish on JetStream's ack
// subjects but in-progress ones (+WPI): a second settle of one delivery
// (an Ack after a Term, two dead letters' acks, a Nak after the ack)
// shows as a count above one. It reads the wire, so nothing of the
// dispatcher's own bookkeeping is trusted.
type settleFrames struct {
	mu     sync.Mutex
	counts map[string]int
	frames map[string][]string
}

func watchSettles(t *testing.T, e *testenv.Env) *settleFrames {
	t.Helper()
	nc, _ := e.Connect()
	s := &settleFrames{counts: map[string]int{}, frames: map[string][]string{}}
	sub, err := nc.Subscribe("$JS.ACK.>", func(m *nats.Msg) {
		body := string(m.Data)
		if strings.HasPrefix(body, "+WPI") {
			return
		}
		tok := strings.Split(m.Subject, ".")
		var stream, consumer, sseq string
		switch {
		case len(tok) == 9: // $JS.ACK.<stream>.<consumer>.<dc>.<sseq>.<cseq>.<ts>.<pending>
			stream, consumer, sseq = tok[2], tok[3], tok[5]
		case len(tok) >= 11: // $JS.ACK.<domain>.<hash>.<stream>.<consumer>.<dc>.<sseq>...
			stream, consumer, sseq = tok[4], tok[5], tok[7]
		default:
			return
		}
		k := stream + "/" + consumer + "/" + sseq
		kind := body
		if i := strings.IndexAny(kind, " {"); i >= 0 {
			kind = kind[:i]
		}
		if kind == "" {
			kind = "+ACK"
		}
		s.mu.Lock()
		s.counts[k]++
		s.frames[k] = append(s.frames[k], kind)
		s.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return s
}

// of is what was settled of one stream sequence, per consumer.
func (s *settleFrames) of(stream string, seq uint64) map[string][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]string{}
	suffix := "/" + strconv.FormatUint(seq, 10)
	for k, f := range s.frames {
		if strings.HasPrefix(k, stream+"/") && strings.HasSuffix(k, suffix) {
			consumer := strings.TrimSuffix(strings.TrimPrefix(k, stream+"/"), suffix)
			out[consumer] = append([]string(nil), f...)
		}
	}
	return out
}

// twice lists the deliveries of stream settled more than once.
func (s *settleFrames) twice(stream string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for k, n := range s.counts {
		if n > 1 && strings.HasPrefix(k, stream+"/") {
			out = append(out, k+" "+strings.Join(s.frames[k], ","))
		}
	}
	return out
}

// An invalid envelope in the middle of a stream, through each kind of
// sink's path (worker.handle plain and batched, the keyed batcher's pass,
// the ordered lanes' parseRouteGuarded): one invalid_envelope dead letter,
// counted once, its message settled once (one +ACK on the wire for the
// sink's consumer), every valid event around it delivered once, and
// events published after it still flowing. parseRoute now returns its
// delivery with ok=false: no caller may settle, record or count it again.
//
// Green on 0666fc4: every caller reads d only when ok (admit's
// `!ok || d.retry` short-circuits, rescue and orderer.admit return), and
// the keyed pass's note reads only d.retry, d.pending and d.origin.
func TestRev14InvalidEnvelopeSettledOnceOnEverySinkPath(t *testing.T) {
	t.Parallel() // waits on the server and the vendor; counts settlements, not time
	for _, tc := range []struct {
		name   string
		sink   func(e *testenv.Env) config.Sink
		vendor string
		// inOrder: the sink keeps each user's order (a plain sink's
		// workers deliver side by side, each event once in any order).
		inOrder bool
	}{
		{"plain", func(e *testenv.Env) config.Sink {
			return e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
		}, emulator.MetrixGateway, false},
		{"batched chabok", func(e *testenv.Env) config.Sink {
			return batched(e.Sink("gateway", emulator.Chabok, nil, nil), 10, 100*time.Millisecond)
		}, emulator.Chabok, false},
		{"keyed batched metrix gateway", func(e *testenv.Env) config.Sink {
			s := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 10, 200*time.Millisecond)
			s.Concurrency = 4
			return s
		}, emulator.MetrixGateway, true},
		{"ordered by_user", func(e *testenv.Env) config.Sink { return orderedSink(e) }, emulator.MetrixGateway, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := testenv.New(t)
			frames := watchSettles(t, e)
			sink := tc.sink(e)
			d := e.Start([]config.Sink{sink}, gatewayRoute)
			users := []string{"u0", "u1", "u2", "u3"}
			before := publishUsers(t, e, users, 5, "order_paid")
			// The invalid one on a user's own subject: the keyed and
			// ordered sinks see it between that user's events.
			bad := e.PublishRaw(e.Topo.EventSubjectFor(envelope.TypeTrack, "u1"), "rev14-not-an-envelope", []byte(`{"specversion":"1.0"}`))
			after := publishUsers(t, e, users, 5, "order_paid")
			const valid = 2 * 5 * 4
			testenv.Eventually(t, 20*time.Second, "every valid event delivered and the sink idle", func() bool {
				return d.Tally.DeliveredTo("gateway") >= valid && e.Idle("gateway")
			})
			if n := d.Tally.DeliveredTo("gateway"); n != valid {
				t.Errorf("%d deliveries counted, want %d", n, valid)
			}
			recs := deadLetters(t, e, dlq.Filter{})
			if len(recs) != 1 || recs[0].Reason != outcome.InvalidEnvelope {
				for _, r := range recs {
					t.Logf("dead letter: sink %q reason %s event %q", r.Sink, r.Reason, r.EventID)
				}
				t.Errorf("%d dead letters, want one invalid_envelope", len(recs))
			}
			received, _, counts := d.Tally.Snapshot()
			if received != valid+1 {
				t.Errorf("%d received counted, want %d", received, valid+1)
			}
			dl := 0
			for _, c := range counts {
				for reason, n := range c.DeadLettered {
					dl += n
					if reason != string(outcome.InvalidEnvelope) {
						t.Errorf("sink %s: %d dead-lettered %s", c.Sink, n, reason)
					}
				}
			}
			if dl != 1 {
				t.Errorf("%d dead letters counted, want 1 (%+v)", dl, counts)
			}
			got := frames.of(bad.Stream, bad.Sequence)
			if len(got) != 1 {
				t.Errorf("invalid envelope (seq %d) settled by %d consumers, want one: %v", bad.Sequence, len(got), got)
			}
			for consumer, f := range got {
				if len(f) != 1 || f[0] != "+ACK" {
					t.Errorf("invalid envelope (seq %d) on consumer %s settled %v, want one +ACK", bad.Sequence, consumer, f)
				}
			}
			if tw := frames.twice(bad.Stream); len(tw) > 0 {
				t.Errorf("settled more than once: %v", tw)
			}
			if tc.vendor == emulator.MetrixGateway {
				for u, ids := range after {
					before[u] = append(before[u], ids...)
				}
				if !tc.inOrder { // once each, in whatever order they went
					us, ids := gatewayBodies(t, e.Emu.Vendor(emulator.MetrixGateway))
					got := map[string][]string{}
					for i, u := range us {
						got[u] = append(got[u], ids[i]...)
					}
					for u := range before {
						slices.Sort(before[u])
						slices.Sort(got[u])
					}
					for u, want := range before {
						if !slices.Equal(got[u], want) {
							t.Errorf("user %s: delivered %v, want each of %v once", u, got[u], want)
						}
					}
				} else {
					checkOnceInOrder(t, e.Emu.Vendor(emulator.MetrixGateway), before)
				}
			}
		})
	}
}
