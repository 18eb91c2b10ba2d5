package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Whether a sink covers an event is decided by the event's position
// (starts.go), and a checker that finds no consumer of that name takes
// every event up to the stream's last sequence to be below any start the
// sink gets later. A consumer lost and healed keeps its start (heal.go):
// an event checked while it is gone is dead-lettered as
// unknown_destination by the other sink's replica, and delivered as well
// by the healed consumer. Both, where the design promises one or the other.
func TestEventForASinkWhoseConsumerIsHealingIsNotAlsoDeadLettered(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.New(t)
	e.Start([]config.Sink{e.Sink("chabok", emulator.Chabok, nil, nil)}, []config.Route{{Sinks: []string{"chabok"}}})
	e.Start([]config.Sink{e.Sink("late", emulator.MetrixGateway, slugs, nil)}, []config.Route{{Sinks: []string{"late"}}})
	first := testenv.Track(t, "order_paid", "u1", envelope.WithDestinations("late"))
	e.Publish(first)
	testenv.Eventually(t, 10*time.Second, "the first event delivered to late", allDelivered(t, e, []string{first.ID}))
	time.Sleep(6 * time.Second) // past the 5 s a found sink is believed

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.JS.DeleteConsumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("late")); err != nil {
		t.Fatal(err)
	}
	ev := testenv.Track(t, "order_paid", "u2", envelope.WithDestinations("late"))
	e.Publish(ev)
	testenv.Eventually(t, 20*time.Second, "the event delivered to late by its healed consumer", allDelivered(t, e, []string{ev.ID}))
	testenv.Eventually(t, 10*time.Second, "both sinks through it", func() bool { return e.Idle("chabok", "late") })
	if n := unknownFor(t, e, "late")[ev.ID]; n != 0 {
		t.Errorf("the event was delivered to late and dead-lettered for it as unknown_destination (%d record)", n)
	}
}
