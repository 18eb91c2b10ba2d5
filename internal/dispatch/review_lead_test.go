package dispatch_test

// Review of the lead recorded on the server (chapar.lead, ChooseLeads,
// sweep.go): cases the change's own tests do not reach.

import (
	"context"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// The lead's mark lives on its consumer. A consumer lost while no
// dispatcher runs (an R1 consumer lost with its server, `nats consumer
// rm`) is recreated at the next bind from its recorded floor, but which
// sinks lead is read before that (topology.Leads): the lost lead is not
// seen, a config that does not list it first (reordering is documented as
// safe) makes its first sink the lead where it stands, and recreates the
// old lead from its floor reading only its types. What the old lead had
// not read, off those types (an invalid envelope, an event on a subject
// its sink does not read), is then checked by no one.
func TestReviewALeadConsumerLostWhileStoppedStaysTheLead(t *testing.T) {
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	purchase := config.Route{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
	old := e.Start([]config.Sink{first, gateway}, []config.Route{purchase, track})
	setPaused(t, e, "first", true)
	testenv.Eventually(t, 10*time.Second, "the lead paused", func() bool { return old.Tally.Paused("first") })
	// The lead's backlog; gateway reads past it.
	e.PublishRaw(e.Topo.EventSubject("com.shop.order.shipped"), "bad-1", []byte(`{"not":"an envelope"}`))
	stray := publishStray(t, e)
	ids := publishTracks(t, e, 5, "order_paid")
	testenv.Eventually(t, 20*time.Second, "gateway past the backlog", allDelivered(t, e, ids))
	testenv.Eventually(t, 20*time.Second, "gateway settled", func() bool { return e.Idle("gateway") })
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	setPaused(t, e, "first", false)
	// The lead's consumer lost while nothing runs.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.JS.DeleteConsumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("first")); err != nil {
		t.Fatal(err)
	}
	// The same sinks, reordered.
	e.Start([]config.Sink{gateway, first}, []config.Route{purchase, track})
	marker := testenv.Track(t, "order_paid", "marker")
	e.Publish(marker)
	testenv.Eventually(t, 20*time.Second, "the marker delivered", allDelivered(t, e, []string{marker.ID}))
	testenv.Eventually(t, 20*time.Second, "settled", func() bool { return e.Idle("first", "gateway") })
	if s := stateOf(t, e, "first"); !s.lead || !s.readsEverything(e) {
		t.Errorf("the old lead, recreated: %+v, want still the lead, reading every subject", s)
	}
	if n := len(deadLetters(t, e, dlq.Filter{Reason: "invalid_envelope"})); n != 1 {
		t.Errorf("the invalid envelope in the lost lead's backlog: %d dead letters, want 1", n)
	}
	if got, dead := gatewayIDs(t, e)[stray.ID], unknownFor(t, e, "gateway")[stray.ID]; got+dead != 1 {
		t.Errorf("the stray track event: delivered %d times, dead-lettered %d times; want one of the two, once", got, dead)
	}
}
