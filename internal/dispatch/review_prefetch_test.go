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

// Review of the larger pull-ahead (prefetch: up to 512, half of
// max_ack_pending): two replicas share a consumer over a backlog larger
// than both pulls, with a vendor slow enough that most of what each pulls
// waits several ack_waits in its keeper. Every event reaches the vendor
// exactly once, and both replicas deliver.
func TestLargePrefetchSharedByReplicasDeliversEachEventOnce(t *testing.T) {
	e := testenv.New(t)
	hook := e.Sink("hook", emulator.Webhook, nil, nil)
	hook.Concurrency = 2
	e.Emu.Vendor(emulator.Webhook).SetFault(emulator.Fault{Status: 200, Latency: 20 * time.Millisecond})
	routes := []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"hook"}}}
	ackWait := func(c *config.Dispatcher) { c.AckWait = 2 * time.Second }
	// The sink exists before the backlog (a new sink starts at new events).
	if err := e.Start([]config.Sink{hook}, routes, ackWait).Stop(); err != nil {
		t.Fatal(err)
	}
	const events = 1200
	ids := make([]string, events)
	for i := range ids {
		env := testenv.Track(t, "order_paid", fmt.Sprintf("user-%d", i))
		ids[i] = env.ID
		e.Publish(env)
	}
	a := e.Start([]config.Sink{hook}, routes, ackWait)
	b := e.Start([]config.Sink{hook}, routes, ackWait)
	for deadline := time.Now().Add(60 * time.Second); a.Tally.DeliveredTo("hook")+b.Tally.DeliveredTo("hook") < events; {
		if time.Now().After(deadline) {
			c, _ := e.JS.Consumer(context.Background(), e.Topo.EventsStream(), topology.SinkConsumer("hook"))
			info, _ := c.Info(context.Background())
			t.Fatalf("delivered a %d, b %d of %d; vendor saw %d ids; consumer: pending %d, ack pending %d, redelivered %d, waiting %d, delivered %+v, ack floor %+v",
				a.Tally.DeliveredTo("hook"), b.Tally.DeliveredTo("hook"), events, len(webhookRequestsPerID(t, e)),
				info.NumPending, info.NumAckPending, info.NumRedelivered, info.NumWaiting, info.Delivered, info.AckFloor)
		}
		time.Sleep(100 * time.Millisecond)
	}
	testenv.Eventually(t, 20*time.Second, "the consumers idle", func() bool { return e.Idle("hook") })
	seen := webhookRequestsPerID(t, e)
	dups, missing := 0, 0
	for _, id := range ids {
		switch n := seen[id]; {
		case n == 0:
			missing++
		case n > 1:
			dups += n - 1
		}
	}
	if dups > 0 || missing > 0 {
		t.Errorf("%d duplicate deliveries and %d events never delivered of %d, with nothing failing", dups, missing, events)
	}
	t.Logf("replica a delivered %d, replica b %d", a.Tally.DeliveredTo("hook"), b.Tally.DeliveredTo("hook"))
}
