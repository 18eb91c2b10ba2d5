package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// Review (issue 19): the events stream deleted and made again under the
// same name while a dispatcher runs (an operator's `nats stream rm`, step 4
// of the partition-change procedure done with one replica left running,
// another replica's start recreating it). The running replica's healer
// recreates its consumer above the floor it read on the OLD stream
// instance: the new stream's sequences restart at 1, so every event of
// the new stream up to that floor is skipped. restoreLost checks the
// stream instance (Floor.StreamCreated); the healer does not.
func TestReviewHealerFloorOfADeletedStreamIsNotAppliedToItsSuccessor(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	e.Start([]config.Sink{sink}, routes)
	first := publishTracks(t, e, 10, "order_paid")
	testenv.Eventually(t, 10*time.Second, "the first events delivered", allDelivered(t, e, first))
	time.Sleep(6 * time.Second) // the healer reads the floor (10)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.JS.DeleteStream(ctx, e.Topo.EventsStream()); err != nil {
		t.Fatal(err)
	}
	if err := e.Topo.Ensure(ctx, e.JS); err != nil { // as a replica starting does
		t.Fatal(err)
	}
	again := publishTracks(t, e, 12, "order_paid") // sequences 1 to 12 of the new stream
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) && !allDelivered(t, e, again)() {
		time.Sleep(200 * time.Millisecond)
	}
	got := gatewayIDs(t, e)
	missing := 0
	for _, id := range again {
		if got[id] == 0 {
			missing++
		}
	}
	t.Logf("%d of %d events of the recreated stream never delivered", missing, len(again))
	if missing > 0 {
		t.Errorf("%d of %d events of the recreated stream never delivered (and not dead-lettered)", missing, len(again))
	}
}
