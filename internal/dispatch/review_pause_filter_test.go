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
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Review of the pause's reach under subject filters: the paused sink is
// not the first one, so its consumer reads only track and the direct
// subjects (several filters: topology.OldestPending reads the oldest of
// each), while events of another type are stored between its own. Two
// replicas sweep it. Each of its old events is dead-lettered
// paused_past_max_age once, no other type's event is dead-lettered for
// it, the events published after the sweep (within the reach) are not
// dead-lettered, and after the resumption they are delivered.
func TestReviewPausedFilteredSinkPastReachDeadLettersOnlyItsOldEvents(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.New(t)
	withMaxAge(t, e, pastReachMaxAge)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	sinks := []config.Sink{e.Sink("first", emulator.Chabok, nil, nil), e.Sink("gateway", emulator.MetrixGateway, slugs, nil)}
	routes := []config.Route{
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}},
		{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}},
	}
	a := e.Start(sinks, routes)
	b := e.Start(sinks, routes)
	c, err := e.JS.Consumer(context.Background(), e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	if f := topology.FiltersOf(c.CachedInfo().Config); len(f) < 2 {
		t.Fatalf("gateway's consumer filters %v: want its type's subject and the direct subjects", f)
	}
	setPaused(t, e, "gateway", true)
	testenv.Eventually(t, 5*time.Second, "paused", allPaused(true, a, b))
	var old []string
	for i := range 10 {
		other, err := envelope.New("com.shop.order.shipped", "test", map[string]any{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		e.Publish(other) // routed nowhere: the first sink skips it, gateway never reads it
		old = append(old, publishTracks(t, e, 1, "order_paid")...)
	}
	pastReach := func() bool {
		return len(deadLetters(t, e, dlq.Filter{Sink: "gateway", Reason: outcome.PausedPastMaxAge})) >= len(old)
	}
	testenv.Eventually(t, pastReachMaxAge+10*time.Second, "the old events dead-lettered", pastReach)
	young := publishTracks(t, e, 5, "signup")
	if n := len(vendor.Requests()); n != 0 {
		t.Errorf("%d requests to the vendor while paused, want 0", n)
	}
	setPaused(t, e, "gateway", false)
	testenv.Eventually(t, 5*time.Second, "resumed", allPaused(false, a, b))
	testenv.Eventually(t, 15*time.Second, "the young events delivered", allDelivered(t, e, young))
	testenv.Eventually(t, 10*time.Second, "settled", func() bool { return e.Idle("first", "gateway") })
	dead := map[string]int{}
	for _, r := range deadLetters(t, e, dlq.Filter{}) {
		dead[r.EventID]++
		if r.Sink != "gateway" || r.Reason != outcome.PausedPastMaxAge {
			t.Errorf("dead letter of %s for %s: %s, want only gateway's paused_past_max_age", r.EventID, r.Sink, r.Reason)
		}
	}
	for _, id := range old {
		if dead[id] != 1 {
			t.Errorf("old event %s: %d dead letters, want 1", id, dead[id])
		}
	}
	got := gatewayIDs(t, e)
	for _, id := range young {
		if dead[id] != 0 || got[id] != 1 {
			t.Errorf("young event %s: %d dead letters, delivered %d times; want 0 and 1", id, dead[id], got[id])
		}
	}
	for _, id := range old {
		if got[id] != 0 {
			t.Errorf("old event %s reached the vendor before any replay", id)
		}
	}
}

// Review of a sweep racing the resumption: 300 events (more than one
// sweep's fetch) cross the reach together; the sink is resumed as soon as
// the first dead letter is stored, with two replicas sweeping. Each event
// ends either dead-lettered once (and not at the vendor) or delivered,
// never both and never neither.
func TestReviewSweepRacingResumeLosesNothing(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.New(t)
	withMaxAge(t, e, pastReachMaxAge)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	a := e.Start([]config.Sink{sink}, gatewayRoute)
	b := e.Start([]config.Sink{sink}, gatewayRoute)
	setPaused(t, e, "gateway", true)
	testenv.Eventually(t, 5*time.Second, "paused", allPaused(true, a, b))
	ids := publishTracks(t, e, 300, "order_paid")
	testenv.Eventually(t, pastReachMaxAge+10*time.Second, "the first dead letter", func() bool {
		return len(deadLetters(t, e, dlq.Filter{Sink: "gateway"})) > 0
	})
	setPaused(t, e, "gateway", false)
	testenv.Eventually(t, 5*time.Second, "resumed", allPaused(false, a, b))
	var got, dead map[string]int
	accounted := func() bool {
		got, dead = gatewayIDs(t, e), map[string]int{}
		for _, r := range deadLetters(t, e, dlq.Filter{Sink: "gateway"}) {
			dead[r.EventID]++
		}
		for _, id := range ids {
			if got[id]+dead[id] == 0 {
				return false
			}
		}
		return e.Idle("gateway")
	}
	deadline := time.Now().Add(15 * time.Second)
	for !accounted() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
	}
	lost, both := 0, 0
	for _, id := range ids {
		switch {
		case got[id]+dead[id] == 0:
			lost++
		case got[id] > 0 && dead[id] > 0:
			both++
		}
		if dead[id] > 1 {
			t.Errorf("event %s: %d dead letters", id, dead[id])
		}
	}
	t.Logf("of %d events: %d dead-lettered, %d delivered, %d both, %d lost", len(ids), len(dead), len(got), both, lost)
	if lost > 0 || both > 0 {
		t.Errorf("%d events neither delivered nor dead-lettered, %d both", lost, both)
	}
}
