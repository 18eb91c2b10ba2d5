package redeliver_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/redeliver"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// world is a deployment of two sinks on three partitions: hook (the
// webhook) gets track events, chabok gets every event. before, window and
// after are the ids published before since, between since and until, and
// after until, each delivered once.
type world struct {
	e              *testenv.Env
	routes         []config.Route
	since, until   time.Time
	before, window []string
	after          []string
	// kinds are each window event's name ("signup" or "order_paid").
	kinds map[string]string
}

func newWorld(t *testing.T) *world {
	t.Helper()
	e := testenv.NewPartitioned(t, 3)
	w := &world{e: e, kinds: map[string]string{},
		routes: []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"hook"}}, {Sinks: []string{"chabok"}}}}
	e.Start([]config.Sink{e.Sink("hook", emulator.Webhook, nil, nil), e.Sink("chabok", emulator.Chabok, nil, nil)}, w.routes)
	publish := func(n int, name string) []string {
		var ids []string
		for i := range n {
			env := testenv.Track(t, name, "user-"+string(rune('a'+i%7)))
			e.Publish(env)
			ids = append(ids, env.ID)
			w.kinds[env.ID] = name
		}
		return ids
	}
	// Stored times come from the server's clock, the one the test reads:
	// an event confirmed before since was stored before it.
	w.before = publish(4, "signup")
	w.since = time.Now()
	w.window = append(publish(6, "signup"), publish(4, "order_paid")...)
	identify, err := envelope.New(envelope.TypeIdentify, "test", envelope.Identify{User: envelope.User{ID: "user-z"}})
	if err != nil {
		t.Fatal(err)
	}
	e.Publish(identify) // in the window, but not routed to hook
	w.until = time.Now()
	w.after = publish(3, "signup")
	all := len(w.before) + len(w.window) + len(w.after)
	testenv.Eventually(t, 20*time.Second, "first deliveries", func() bool {
		return len(hookIDs(t, e)) == all && e.Idle("hook", "chabok")
	})
	return w
}

// hookIDs are the event ids the webhook vendor was sent, in order.
func hookIDs(t *testing.T, e *testenv.Env) []string {
	t.Helper()
	var ids []string
	for _, r := range e.Emu.Vendor(emulator.Webhook).Requests() {
		var body struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatalf("webhook body: %v", err)
		}
		ids = append(ids, body.ID)
	}
	return ids
}

func retriesLastSeq(t *testing.T, e *testenv.Env) uint64 {
	t.Helper()
	s, err := e.JS.Stream(context.Background(), e.Topo.RetriesStream())
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.LastSeq
}

// countingPacer counts the waits; after stopAfter of them (if set) it
// ends the job's context, as a Ctrl-C would.
type countingPacer struct {
	mu        sync.Mutex
	waits     int
	stopAfter int
	cancel    context.CancelFunc
}

func (p *countingPacer) Wait(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopAfter > 0 && p.waits == p.stopAfter {
		p.cancel()
		return ctx.Err()
	}
	p.waits++
	return ctx.Err()
}

// A dry run counts the window's events the sink's routes send it and
// samples them, and sends nothing; the job then re-sends exactly those,
// to that sink alone, each after a wait on the pacer, with the stored
// envelope (its id the vendor's idempotency key).
func TestRedeliverWindowToOneSink(t *testing.T) {
	w := newWorld(t)
	e := w.e
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	chabokBefore := e.Emu.Vendor(emulator.Chabok).Count(200)
	hookBefore := len(hookIDs(t, e))

	pace := &countingPacer{}
	opts := redeliver.Options{Sink: "hook", Routes: w.routes, Filter: redeliver.Filter{Since: w.since, Until: w.until}, Pace: pace}
	seq := retriesLastSeq(t, e)
	dry := opts
	dry.DryRun = true
	res, err := redeliver.Run(ctx, e.JS, e.Topo, dry)
	if err != nil {
		t.Fatal(err)
	}
	if res.Scanned != len(w.window)+1 || res.Matched != len(w.window) || res.NotRouted != 1 || res.Sent != 0 {
		t.Errorf("dry run: scanned %d, matched %d, not routed %d, sent %d; want %d, %d, 1, 0",
			res.Scanned, res.Matched, res.NotRouted, res.Sent, len(w.window)+1, len(w.window))
	}
	if len(res.Sample) != 5 || !slices.Contains(w.window, res.Sample[0].ID) || res.Sample[0].Type != envelope.TypeTrack {
		t.Errorf("dry run's sample: %+v", res.Sample)
	}
	if got := retriesLastSeq(t, e); got != seq || pace.waits != 0 {
		t.Fatalf("the dry run published (retries stream's last sequence %d → %d) or paced (%d waits)", seq, got, pace.waits)
	}

	res, err = redeliver.Run(ctx, e.JS, e.Topo, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent != len(w.window) || res.Next != nil || pace.waits != res.Sent {
		t.Fatalf("job: sent %d (want %d), next %+v, %d waits on the pacer", res.Sent, len(w.window), res.Next, pace.waits)
	}
	testenv.Eventually(t, 20*time.Second, "the redelivery", func() bool {
		return len(hookIDs(t, e)) >= hookBefore+len(w.window) && e.Idle("hook", "chabok")
	})
	again := hookIDs(t, e)[hookBefore:]
	slices.Sort(again)
	want := slices.Clone(w.window)
	slices.Sort(want)
	if !slices.Equal(again, want) {
		t.Errorf("hook got again %v, want the window's %v", again, want)
	}
	if got := e.Emu.Vendor(emulator.Chabok).Count(200); got != chabokBefore {
		t.Errorf("chabok got %d requests during hook's redelivery", got-chabokBefore)
	}
}

// The filters narrow the window (a name pattern here); --all re-sends what
// the routes do not send the sink, the filters still applying.
func TestRedeliverFilters(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	base := redeliver.Options{Sink: "hook", Routes: w.routes, DryRun: true, Filter: redeliver.Filter{Since: w.since, Until: w.until}}
	for _, c := range []struct {
		name    string
		filter  func(*redeliver.Filter)
		matched int
	}{
		{"name pattern", func(f *redeliver.Filter) { f.Name = "order_*" }, 4},
		{"type", func(f *redeliver.Filter) { f.Type = envelope.TypeIdentify }, 0},
		{"type, all", func(f *redeliver.Filter) { f.Type, f.All = envelope.TypeIdentify, true }, 1},
		{"all", func(f *redeliver.Filter) { f.All = true }, len(w.window) + 1},
		{"no until", func(f *redeliver.Filter) { f.Until = time.Time{} }, len(w.window) + len(w.after)},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := base
			c.filter(&o.Filter)
			res, err := redeliver.Run(ctx, w.e.JS, w.e.Topo, o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Matched != c.matched {
				t.Errorf("matched %d, want %d (%+v)", res.Matched, c.matched, res)
			}
			for _, s := range res.Sample {
				if c.name == "name pattern" && w.kinds[s.ID] != "order_paid" {
					t.Errorf("sampled %s (%s)", s.ID, w.kinds[s.ID])
				}
			}
		})
	}
}

// A job stopped part-way (Ctrl-C) says where: the first event it did not
// send, whose time as --since goes on from there; the two runs together
// send each of the window's events once.
func TestRedeliverInterruptedSaysWhereItStopped(t *testing.T) {
	w := newWorld(t)
	e := w.e
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hookBefore := len(hookIDs(t, e))

	jctx, stop := context.WithCancel(ctx)
	defer stop()
	pace := &countingPacer{stopAfter: 3, cancel: stop}
	opts := redeliver.Options{Sink: "hook", Routes: w.routes, Filter: redeliver.Filter{Since: w.since, Until: w.until}, Pace: pace}
	res, err := redeliver.Run(jctx, e.JS, e.Topo, opts)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted job: %v, want context.Canceled", err)
	}
	if res.Sent != 3 || res.Next == nil || !slices.Contains(w.window, res.Next.ID) || !res.Resume.Equal(res.Next.Stored) {
		t.Fatalf("interrupted job: sent %d, next %+v, resume %v", res.Sent, res.Next, res.Resume)
	}

	opts.Filter.Since, opts.Pace = res.Resume, nil
	rest, err := redeliver.Run(ctx, e.JS, e.Topo, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res.Sent+rest.Sent != len(w.window) {
		t.Fatalf("sent %d then %d, want %d in all", res.Sent, rest.Sent, len(w.window))
	}
	testenv.Eventually(t, 20*time.Second, "both runs' redeliveries", func() bool {
		return len(hookIDs(t, e)) >= hookBefore+len(w.window) && e.Idle("hook")
	})
	again := hookIDs(t, e)[hookBefore:]
	slices.Sort(again)
	want := slices.Clone(w.window)
	slices.Sort(want)
	if !slices.Equal(again, want) {
		t.Errorf("hook got again %v, want the window's %v once each", again, want)
	}
}

// A redelivery leaves nothing on the server: no consumer on any events
// stream.
func TestRedeliverLeavesNoConsumer(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	consumers := func() int {
		n := 0
		for _, name := range w.e.Topo.EventsStreams() {
			s, err := w.e.JS.Stream(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			n += s.CachedInfo().State.Consumers
		}
		return n
	}
	before := consumers()
	o := redeliver.Options{Sink: "hook", Routes: w.routes, DryRun: true, Filter: redeliver.Filter{Since: w.since}}
	if _, err := redeliver.Run(ctx, w.e.JS, w.e.Topo, o); err != nil {
		t.Fatal(err)
	}
	if got := consumers(); got != before {
		t.Errorf("consumers on the events streams: %d before, %d after", before, got)
	}
}

// A redelivery the vendor refuses (at once, or after its retries) is
// dead-lettered as a delivery of its own, beside the first delivery's dead
// letter: its record is keyed with the job (topology.HeaderRedelivery,
// carried across retries), so the server does not take it for the first
// one and drop it as a duplicate.
func TestRedeliveryThatFailsIsDeadLetteredApart(t *testing.T) {
	for _, c := range []struct {
		name   string
		status int
	}{{"rejected", 400}, {"retries exhausted", 503}} {
		t.Run(c.name, func(t *testing.T) {
			e := testenv.New(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			routes := []config.Route{{Sinks: []string{"hook"}}}
			sink := e.Sink("hook", emulator.Webhook, nil, nil)
			sink.Breaker.FailureThreshold = 1000 // keep the breaker out of it
			e.Start([]config.Sink{sink}, routes)
			e.Emu.Vendor(emulator.Webhook).SetFault(emulator.Fault{Status: c.status, Code: "BAD_FIELD"})
			since := time.Now()
			env := testenv.Track(t, "signup", "user-1")
			e.Publish(env)
			st := dlq.NewStore(e.JS, e.Topo)
			records := func() []*dlq.Record {
				recs, err := st.List(ctx, dlq.Filter{EventID: env.ID}, 0)
				if err != nil {
					t.Fatal(err)
				}
				return recs
			}
			testenv.Eventually(t, 20*time.Second, "the first delivery's dead letter", func() bool { return len(records()) == 1 })

			res, err := redeliver.Run(ctx, e.JS, e.Topo, redeliver.Options{Sink: "hook", Routes: routes, Filter: redeliver.Filter{Since: since}})
			if err != nil || res.Sent != 1 {
				t.Fatalf("sent %d: %v", res.Sent, err)
			}
			testenv.Eventually(t, 20*time.Second, "the redelivery's dead letter", func() bool { return len(records()) == 2 && e.Idle("hook") })
			recs := records()
			if recs[0].Header.Get(topology.HeaderRedelivery) != "" || recs[1].Header.Get(topology.HeaderRedelivery) != res.Job ||
				recs[1].Origin != recs[0].Origin || recs[1].Status != c.status || recs[1].Attempts != recs[0].Attempts {
				t.Errorf("dead letters: %+v\n%+v", recs[0], recs[1])
			}
		})
	}
}
