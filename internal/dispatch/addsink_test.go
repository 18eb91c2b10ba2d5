package dispatch_test

// A sink added to a running deployment: every event that names it is
// either its to deliver or dead-lettered as unknown_destination, once,
// decided by the event's position in the stream (issues 18 and 19).

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// unknownFor lists the ids of sink's unknown_destination dead letters.
func unknownFor(t *testing.T, e *testenv.Env, sink string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, r := range deadLetters(t, e, dlq.Filter{Reason: outcome.UnknownDestination, Sink: sink}) {
		out[r.EventID]++
	}
	return out
}

// Issue 18: a dispatcher that found "late" missing a moment ago checks an
// event published after late's consumer exists. It is late's to deliver:
// delivered, and not dead-lettered as well.
func TestEventForJustAddedSinkIsDeliveredNotAlsoDeadLettered(t *testing.T) {
	t.Parallel() // waits on replicas and the vendor, not on the CPU
	e := testenv.New(t)
	e.Start([]config.Sink{e.Sink("chabok", emulator.Chabok, nil, nil)}, []config.Route{{Sinks: []string{"chabok"}}})
	before := testenv.Track(t, "order_paid", "u1", envelope.WithDestinations("late"))
	e.Publish(before)
	testenv.Eventually(t, 10*time.Second, "the first event dead-lettered for late", func() bool {
		return unknownFor(t, e, "late")[before.ID] == 1
	})
	// The rolling deploy's first replica adds late; the other still runs
	// only chabok and believed late missing a moment ago.
	e.Start([]config.Sink{e.Sink("late", emulator.MetrixGateway, slugs, nil)}, []config.Route{{Sinks: []string{"late"}}})
	after := testenv.Track(t, "order_paid", "u2", envelope.WithDestinations("late"))
	e.Publish(after)
	testenv.Eventually(t, 10*time.Second, "the second event delivered to late", allDelivered(t, e, []string{after.ID}))
	testenv.Eventually(t, 10*time.Second, "both sinks through both events", func() bool { return e.Idle("chabok", "late") })
	if got := unknownFor(t, e, "late"); got[after.ID] != 0 || got[before.ID] != 1 {
		t.Errorf("unknown_destination dead letters %v: want the first event's alone, not the delivered one's", got)
	}
	if n := gatewayIDs(t, e)[before.ID]; n != 0 {
		t.Errorf("the event published before late existed was delivered %d times as well as dead-lettered", n)
	}
}

// Issue 19 #3: events that named "late" before it existed, checked by a
// lagging sink only after late's consumer exists, are dead-lettered as
// unknown_destination (replayable), not skipped by everyone.
// With partitions, each partition's consumer has a start of its own.
func TestEventsForSinkAddedWhileAnotherLagsAreDeadLettered(t *testing.T) {
	t.Parallel() // waits on replicas and the vendor, not on the CPU
	for _, partitions := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d partitions", partitions), func(t *testing.T) {
			t.Parallel() // independent cases, each its own server
			e := testenv.New(t)
			if partitions > 1 {
				e = testenv.NewPartitioned(t, partitions)
			}
			sinkAddedWhileAnotherLags(t, e)
		})
	}
}

func sinkAddedWhileAnotherLags(t *testing.T, e *testenv.Env) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// chabok exists but lags: nothing reads its consumer yet.
	if _, err := e.Topo.EnsureSink(ctx, e.JS, "chabok", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 1000}); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, u := range []string{"u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8"} {
		env := testenv.Track(t, "order_paid", u, envelope.WithDestinations("late"))
		ids = append(ids, env.ID)
		e.Publish(env)
	}
	lateCfg := e.Sink("late", emulator.MetrixGateway, slugs, nil)
	e.Start([]config.Sink{lateCfg}, []config.Route{{Sinks: []string{"late"}}})
	e.Start([]config.Sink{e.Sink("chabok", emulator.Chabok, nil, nil)}, []config.Route{{Sinks: []string{"chabok"}}})
	testenv.Eventually(t, 10*time.Second, "the lagging sink through the events", func() bool { return e.Idle("chabok", "late") })
	got := unknownFor(t, e, "late")
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("event %s: %d unknown_destination dead letters, want 1 (%d of %d recorded)", id, got[id], len(got), len(ids))
		}
	}
	if t.Failed() {
		return
	}
	// Replayable now that late exists: each delivered once.
	res, err := dlq.NewStore(e.JS, e.Topo).Replay(ctx, dlq.Filter{Sink: "late"}, dlq.ReplayOptions{})
	if err != nil || res.Replayed != len(ids) {
		t.Fatalf("replay: %+v %v", res, err)
	}
	testenv.Eventually(t, 10*time.Second, "the replays delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 10*time.Second, "late idle", func() bool { return e.Idle("late") })
	for id, n := range gatewayIDs(t, e) {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
}

// Issue 19: a sink added with start: <time> delivers the events stored
// since then that its routes match, not those before.
func TestSinkAddedFromATimeTakesTheEventsSince(t *testing.T) {
	t.Parallel() // waits on replicas and the vendor, not on the CPU
	e := testenv.New(t)
	// With interest retention the stream keeps an event only while some
	// sink has not acked it: a sink nothing runs keeps them here, as
	// limits retention would.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.Topo.EnsureSink(ctx, e.JS, "keep", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 1000}); err != nil {
		t.Fatal(err)
	}
	chabok := e.Sink("chabok", emulator.Chabok, nil, nil)
	e.Start([]config.Sink{chabok}, []config.Route{{Sinks: []string{"chabok"}}})
	old := testenv.Track(t, "order_paid", "u0")
	e.Publish(old)
	time.Sleep(1100 * time.Millisecond) // start is to the second (RFC 3339): the next events are after it
	from := time.Now().Truncate(time.Second)
	since := publishTracks(t, e, 3, "order_paid")
	testenv.Eventually(t, 10*time.Second, "chabok through the events", func() bool { return consumerDone(t, e, "chabok") })
	late := e.Sink("late", emulator.MetrixGateway, slugs, nil)
	late.Start = from.UTC().Format(time.RFC3339)
	e.Start([]config.Sink{chabok, late}, []config.Route{{Sinks: []string{"chabok", "late"}}})
	testenv.Eventually(t, 10*time.Second, "the events since delivered to late", allDelivered(t, e, since))
	testenv.Eventually(t, 10*time.Second, "late idle", func() bool { return consumerDone(t, e, "late") })
	if n := gatewayIDs(t, e)[old.ID]; n != 0 {
		t.Errorf("the event before the start was delivered %d times", n)
	}
}

// consumerDone says a sink's events consumer has nothing pending or in
// flight.
func consumerDone(t *testing.T, e *testenv.Env, sink string) bool {
	t.Helper()
	c, err := e.JS.Consumer(context.Background(), e.Topo.EventsStream(), topology.SinkConsumer(sink))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}
