package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// pastReachMaxAge is the max_age of the tests that pause a sink past its
// reach (nine tenths of it): long enough for a margin (a tenth) that a
// loaded machine's late check still fits in; 8 s (0.8 s) was not always.
const pastReachMaxAge = 20 * time.Second

// withMaxAge makes e's streams keep events for maxAge.
func withMaxAge(t *testing.T, e *testenv.Env, maxAge time.Duration) {
	t.Helper()
	e.Streams.MaxAge, e.Streams.DuplicateWindow = maxAge, time.Second
	e.Topo = topology.New(e.Streams)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Topo.Ensure(ctx, e.JS); err != nil {
		t.Fatal(err)
	}
}

// eventsAgedOut says every events stream is empty: max_age took what was
// published.
func eventsAgedOut(t *testing.T, e *testenv.Env) func() bool {
	return func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, name := range e.Topo.EventsStreams() {
			st, err := e.JS.Stream(ctx, name)
			if err != nil {
				t.Logf("stream %s: %v", name, err)
				return false
			}
			if st.CachedInfo().State.Msgs > 0 {
				return false
			}
		}
		return true
	}
}

// replayPaused replays the sink's paused_past_max_age dead letters, as
// dispatcher dlq replay --sink gateway --reason paused_past_max_age does.
func replayPaused(t *testing.T, e *testenv.Env, want int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := dlq.NewStore(e.JS, e.Topo).Replay(ctx, dlq.Filter{Sink: "gateway", Reason: outcome.PausedPastMaxAge}, dlq.ReplayOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if res.Replayed != want {
		t.Fatalf("replayed %d dead letters, want %d (%+v)", res.Replayed, want, res)
	}
}

// Review (operator pause and limits retention): a sink paused longer than
// streams.max_age lost its backlog: the events left the stream unacked,
// and were neither delivered after the resumption nor dead-lettered (10 of
// 10 here). Now a pause has a reach (rescue.go): past nine tenths of
// max_age the paused sink's events are dead-lettered paused_past_max_age,
// with no request to the vendor, and a replay after the resumption
// delivers them.
func TestOperatorPausePastMaxAgeDeadLettersTheBacklog(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.New(t)
	// The reach is 18 s, the margin before the stream drops them 2 s
	// (a week's is 16.8 h): room for a loaded machine.
	withMaxAge(t, e, pastReachMaxAge)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	// Two replicas: both sweep the paused sink, each event is
	// dead-lettered once.
	a := e.Start([]config.Sink{sink}, gatewayRoute)
	b := e.Start([]config.Sink{sink}, gatewayRoute)
	setPaused(t, e, "gateway", true)
	testenv.Eventually(t, 5*time.Second, "paused", allPaused(true, a, b))
	ids := publishTracks(t, e, 10, "order_paid")
	testenv.Eventually(t, pastReachMaxAge+15*time.Second, "the events aged out of the stream", eventsAgedOut(t, e))
	// A dead letter of an event taken just before the stream dropped it
	// may still be on its way: each event is given a few seconds to be
	// accounted for, and the count below says what was lost.
	var got map[string]int
	dead := map[string]int{}
	accounted := func() bool {
		got, dead = gatewayIDs(t, e), map[string]int{}
		for _, r := range deadLetters(t, e, dlq.Filter{Sink: "gateway"}) {
			dead[r.EventID]++
		}
		for _, id := range ids {
			if got[id] == 0 && dead[id] == 0 {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(5 * time.Second)
	for !accounted() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
	}
	if n := len(vendor.Requests()); n != 0 {
		t.Errorf("%d requests to the vendor while paused, want 0", n)
	}
	for _, r := range deadLetters(t, e, dlq.Filter{Sink: "gateway"}) {
		if r.Reason != outcome.PausedPastMaxAge {
			t.Errorf("dead letter of %s: reason %s, want %s", r.EventID, r.Reason, outcome.PausedPastMaxAge)
		}
	}
	lost := 0
	for _, id := range ids {
		if got[id] == 0 && dead[id] == 0 {
			lost++
		}
		if dead[id] != 1 {
			t.Errorf("event %s: %d dead letters, want 1", id, dead[id])
		}
	}
	t.Logf("of 10 events paused past max_age: %d delivered, %d dead-lettered, %d lost", len(got), len(dead), lost)
	if lost > 0 {
		t.Errorf("%d events neither delivered nor dead-lettered", lost)
	}
	setPaused(t, e, "gateway", false)
	testenv.Eventually(t, 5*time.Second, "resumed", allPaused(false, a, b))
	replayPaused(t, e, 10)
	testenv.Eventually(t, 10*time.Second, "every replayed event delivered", allDelivered(t, e, ids))
}

// An ordered sink paused past the reach: the old events (a prefix of each
// key's) are dead-lettered, marked released_barrier, and the events
// published later, still within the reach, wait and are delivered in
// order after the resumption, without the old ones; a replay then
// delivers those.
func TestOperatorPausePastMaxAgeKeepsAnOrderedSinkInOrder(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.New(t)
	withMaxAge(t, e, pastReachMaxAge)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	// Two replicas: their sweeps take turns at the order group's pin.
	a := e.Start([]config.Sink{orderedSink(e)}, gatewayRoute)
	b := e.Start([]config.Sink{orderedSink(e)}, gatewayRoute)
	setPaused(t, e, "gateway", true)
	testenv.Eventually(t, 5*time.Second, "paused", allPaused(true, a, b))
	old := newKeyed(t, []string{"u0", "u1"}, 5)
	old.publish(e, 0, len(old.envs))
	pastReach := func() bool {
		return len(deadLetters(t, e, dlq.Filter{Sink: "gateway", Reason: outcome.PausedPastMaxAge})) == len(old.envs)
	}
	testenv.Eventually(t, pastReachMaxAge+10*time.Second, "the old events dead-lettered", pastReach)
	young := newKeyed(t, []string{"u0", "u1"}, 3)
	young.publish(e, 0, len(young.envs))
	if n := len(vendor.Requests()); n != 0 {
		t.Errorf("%d requests to the vendor while paused, want 0", n)
	}
	if n := len(deadLetters(t, e, dlq.Filter{Sink: "gateway"})); n != len(old.envs) {
		t.Errorf("%d dead letters, want %d (one per old event)", n, len(old.envs))
	}
	for _, r := range deadLetters(t, e, dlq.Filter{Sink: "gateway"}) {
		if !r.ReleasedBarrier {
			t.Errorf("dead letter of %s not marked released_barrier", r.EventID)
		}
	}
	setPaused(t, e, "gateway", false)
	testenv.Eventually(t, 5*time.Second, "resumed", allPaused(false, a, b))
	testenv.Eventually(t, 15*time.Second, "the young events delivered", young.delivered(t, e))
	young.checkOrder(t, e, false)
	if got := old.atVendor(t, e); len(got) != 0 {
		t.Errorf("dead-lettered events reached the vendor before their replay: %v", got)
	}
	replayPaused(t, e, len(old.envs))
	testenv.Eventually(t, 10*time.Second, "the old events delivered after their replay", old.delivered(t, e))
}

// A pause well within the reach dead-letters nothing: the paused sink's
// oldest events are checked many times meanwhile (every 200 ms with a
// max_age of 20 s), and after the resumption every event is delivered, in
// order.
func TestOperatorPauseWithinReachDeadLettersNothing(t *testing.T) {
	t.Parallel() // waits on the pause and a quiet window; max_age (20 s) is far from anything a loaded machine adds
	e := testenv.New(t)
	withMaxAge(t, e, 20*time.Second)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	a := e.Start([]config.Sink{orderedSink(e)}, gatewayRoute)
	setPaused(t, e, "gateway", true)
	testenv.Eventually(t, 5*time.Second, "paused", allPaused(true, a))
	k := newKeyed(t, []string{"u0", "u1", "u2"}, 4)
	k.publish(e, 0, len(k.envs))
	stayedQuiet(t, 3*time.Second, "a request to the vendor or a dead letter", func() bool {
		return len(vendor.Requests()) > 0 || len(deadLetters(t, e, dlq.Filter{})) > 0
	})
	setPaused(t, e, "gateway", false)
	testenv.Eventually(t, 5*time.Second, "resumed", allPaused(false, a))
	testenv.Eventually(t, 15*time.Second, "every event delivered", k.delivered(t, e))
	k.checkOrder(t, e, false)
	if n := len(deadLetters(t, e, dlq.Filter{})); n != 0 {
		t.Errorf("%d dead letters after a pause within the reach, want 0", n)
	}
}
