package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// The events stream deleted under a running dispatcher (`nats stream rm`)
// takes every consumer on it along. The replica must say so: its sink's
// consumer counted lost and not back (chapar_consumers_lost, /readyz 503
// naming the sink), not "ready" with nothing to pull (before: the healer
// took the look's "stream not found" for a broker hiccup, and the log said
// only "pull interrupted; continuing"). Once the stream is made again (an
// operator, another replica's start) the consumer is recreated from the
// new stream's first event, and its events are delivered.
func TestAnEventsStreamDeletedUnderARunningDispatcherIsReportedLost(t *testing.T) {
	t.Parallel() // waits on the healer's rounds, not on the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	_, js := e.Connect()
	tally, _ := startOn(t, e, js, []config.Sink{sink}, routes, nil)
	first := publishTracks(t, e, 3, "order_paid")
	testenv.Eventually(t, 15*time.Second, "the first events delivered", allDelivered(t, e, first))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if err := e.JS.DeleteStream(ctx, e.Topo.EventsStream()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the sink's consumer reported lost and not back", func() bool {
		lost, down := tally.ConsumersLost("gateway")
		return lost >= 1 && down >= 1
	})
	if err := e.Topo.Ensure(ctx, e.JS); err != nil {
		t.Fatal(err)
	}
	again := publishTracks(t, e, 5, "order_paid")
	testenv.Eventually(t, 45*time.Second, "the new stream's events delivered", allDelivered(t, e, again))
	testenv.Eventually(t, 15*time.Second, "the consumer back", func() bool {
		_, down := tally.ConsumersLost("gateway")
		_, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
		return down == 0 && err == nil
	})
}
