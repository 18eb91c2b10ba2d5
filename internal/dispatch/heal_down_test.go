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

// A sink's events consumer lost while no dispatcher runs (an operator's
// `nats consumer rm` during a full restart, an R1 consumer lost with its
// server during an outage of the dispatchers) is created at the next
// start as a new sink's is: from new events. The sink is not new (its
// retries consumer is there), and the events it had not delivered are
// still in the stream (limits retention), but none reaches the vendor and
// none is dead-lettered.
func TestConsumerLostWhileNoDispatcherRunsKeepsItsBacklog(t *testing.T) {
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	d := e.Start([]config.Sink{sink}, routes)
	first := publishTracks(t, e, 3, "order_paid")
	testenv.Eventually(t, 10*time.Second, "the first events delivered", allDelivered(t, e, first))
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	backlog := publishTracks(t, e, 5, "order_paid") // published while no dispatcher runs
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.JS.DeleteConsumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway")); err != nil {
		t.Fatal(err)
	}
	e.Start([]config.Sink{sink}, routes)
	testenv.Eventually(t, 15*time.Second, "the backlog delivered after the restart", allDelivered(t, e, backlog))
}
