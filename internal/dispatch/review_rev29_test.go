package dispatch_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// stallFullPull starts a one-worker sink whose pull asks for exactly
// prefetch messages, holds the first event's request and publishes the
// rest of the pull's batch, so that the pull's one request is served in
// full while feed waits for the worker: no pull request of this replica's
// is waiting at the server (NumWaiting 0). A consumer deleted then sends
// this replica's pull nothing (the server's 409 "Consumer Deleted" goes to
// waiting requests only), and the pull goes on once the worker is free,
// its next request served by whatever instance is then under the name.
// It returns the first event's gate, and the other events' ids.
func stallFullPull(t *testing.T, e *testenv.Env, h *holding, sink config.Sink) (gate chan struct{}, rest []string) {
	t.Helper()
	n := dispatch.Prefetch(sink.Concurrency, sink.MaxAckPending)
	first := testenv.Track(t, "order_paid", "user-old0")
	h.hold(first.ID)
	e.Publish(first)
	gate, started, _ := h.chans(first.ID)
	waitClosed(t, started, 15*time.Second, "the first event's request started")
	for i := 1; i < n; i++ {
		ev := testenv.Track(t, "order_paid", fmt.Sprintf("user-old%d", i))
		rest = append(rest, ev.ID)
		e.Publish(ev)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer(sink.Name))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the pull's request served in full, none waiting at the server", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.Delivered.Stream == uint64(n) && info.NumWaiting == 0
	})
	return gate, rest
}

// 787bdcc gives a pull's messages the keeper's epoch as of the pull's
// start, and the healer moves the epoch on when a look finds a consumer
// instance it did not know (made again by another replica). But a pull
// does not end when the instance under its name changes: a pull that had
// no request waiting at the server when the consumer went (its one
// request served in full while feed waited for a busy worker, the usual
// state of a saturated sink) hears no "consumer deleted", and its next
// request is served by the new instance. Every message that pull hands
// over from then on carries the epoch of before the healer's look: it is
// "orphaned" at birth, its ack is never sent and the keeper does not keep
// it alive. The pull only ends when the gate shuts, on shutdown, or after
// feed has waited a quarter of ack_wait for workers in all: a sink that
// keeps up with its traffic keeps it for ever. Every event of the new
// instance is then delivered to the vendor and never acked: redelivered
// each ack_wait (max_deliver -1), delivered again each time, the ack
// floor stuck, until max_ack_pending is full of them and nothing new is
// delivered at all.
func TestReviewRev29APullOpenAcrossTheNewInstanceOrphansEverythingItDeliversAfter(t *testing.T) {
	t.Parallel() // waits on the healer's rounds, not on the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Timeout = time.Minute
	sink.Concurrency = 1    // the worker busy with the first event, feed waits with the pull's batch
	sink.MaxAckPending = 64 // a pull of 32
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	h := newHolding()
	wrap := func(_ string, s sinks.Sink) sinks.Sink { h.Sink = s; return h }
	opts := func(c *config.Dispatcher) { c.AckWait = time.Minute; c.ShutdownGrace = 500 * time.Millisecond }
	d := e.StartWrapped([]config.Sink{sink}, routes, wrap, opts)

	gate, old := stallFullPull(t, e, h, sink)
	// Another replica's healer saw the stream deleted first, made it
	// again (as its start would) and the consumer in it: this replica's
	// pull is not told.
	recreateEventsConsumer(t, e, "gateway")
	close(gate)
	testenv.Eventually(t, 30*time.Second, "the deleted stream's events still held sent to the vendor", func() bool {
		got := gatewayIDs(t, e)
		for _, id := range old {
			if got[id] == 0 {
				return false
			}
		}
		return true
	})

	// The new stream's events, one at a time, over more than a healer
	// round (it looks every 5 s): the sink keeps up with them.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	var last *jetstream.PubAck
	from := time.Now()
	for i := 0; i < 5 || time.Since(from) < 7*time.Second; i++ {
		ev := testenv.Track(t, "order_paid", fmt.Sprintf("user-new%d", i))
		last = e.Publish(ev)
		testenv.Eventually(t, 15*time.Second, "a new stream's event delivered", func() bool { return gatewayIDs(t, e)[ev.ID] > 0 })
	}
	var info *jetstream.ConsumerInfo
	acked := func() bool {
		if err := d.NC.Flush(); err != nil {
			return false
		}
		info, err = c.Info(ctx)
		return err == nil && info.AckFloor.Stream >= last.Sequence && info.NumAckPending == 0
	}
	deadline := time.Now().Add(15 * time.Second) // three healer rounds; ack_wait is 60 s
	for !acked() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // polls a condition, as testenv.Eventually
	}
	if !acked() {
		t.Fatalf("the new stream's events 1..%d were all delivered to the vendor by this replica, but the consumer's ack floor is %d with %d ack pending: "+
			"the pull open across the new instance gave them the epoch of before the healer's look, so their acks were never sent; "+
			"they come back after ack_wait and are delivered again, for as long as that pull lasts",
			last.Sequence, info.AckFloor.Stream, info.NumAckPending)
	}
}
