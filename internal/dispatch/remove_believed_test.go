package dispatch_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Issue 19: events naming a sink in destinations, published once `sinks
// remove --yes` has returned, are dead-lettered as unknown_destination
// (replayable), every one. A dispatcher running another sink checks each
// event's destinations and believes a sink it found for a while without
// asking again; a removal that deleted the consumers at once left that
// belief standing, and the events were judged the removed sink's and
// skipped: neither delivered nor dead-lettered. Events keep coming during
// the removal (its consumers marked, not yet deleted), so the checker's
// look-ups see the mark too.
func TestEventsNamingARemovedSinkAreDeadLettered(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// crm exists in the deployment, and no dispatcher runs it any more
	// (the documented procedure's step 1).
	if _, err := e.Topo.EnsureSink(ctx, e.JS, "crm", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 1000}); err != nil {
		t.Fatal(err)
	}
	e.Start([]config.Sink{e.Sink("gateway", emulator.MetrixGateway, slugs, nil)}, []config.Route{{Sinks: []string{"gateway"}}})
	publish := func(u string) string {
		env := testenv.Track(t, "order_paid", u, envelope.WithDestinations("gateway", "crm"))
		e.Publish(env)
		return env.ID
	}
	// The dispatcher has found crm (and believes in it) just before.
	first := publish("u0")
	testenv.Eventually(t, 10*time.Second, "the first event delivered to gateway", allDelivered(t, e, []string{first}))

	removed := make(chan error, 1)
	go func() {
		_, err := e.Topo.Retire(ctx, e.JS, "crm", topology.RemovalSettle)
		removed <- err
	}()
	all := []string{first}
	var after []string
	for i := 1; len(after) < 20; i++ {
		select {
		case err := <-removed:
			if err != nil {
				t.Fatal(err)
			}
			removed = nil // after is from now on
		default:
		}
		id := publish(fmt.Sprintf("u%d", i))
		all = append(all, id)
		if removed == nil {
			after = append(after, id)
		} else {
			time.Sleep(100 * time.Millisecond) // a steady trickle during the removal
		}
	}
	testenv.Eventually(t, 20*time.Second, "every event delivered to gateway", allDelivered(t, e, all))
	// gateway has delivered them all, so each check is done: the dead
	// letters are written or never will be; a moment for the list to
	// show them.
	var got map[string]int
	lost := len(after)
	for deadline := time.Now().Add(5 * time.Second); lost > 0 && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		got, lost = unknownFor(t, e, "crm"), 0
		for _, id := range after {
			if got[id] != 1 {
				lost++
			}
		}
	}
	for id, n := range got {
		if n > 1 {
			t.Errorf("event %s dead-lettered %d times for crm", id, n)
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d events naming crm, published after its removal, not dead-lettered once", lost, len(after))
	}
	if f, err := e.Topo.Footprint(ctx, e.JS, "crm"); err != nil || f.Exists() {
		t.Errorf("crm left behind: %+v %v", f, err)
	}
}
