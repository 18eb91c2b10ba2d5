package dispatch_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// The keepers' epoch (787bdcc, ebef5b1) does not reach an ordered sink:
// its lanes hold their messages outside the keepers, and docs/design.md's
// known limit says a deletion costs the pin its lease, which drops the
// lanes (only an attempt ending in the second before is settled). One
// ordered replica, an operator's `nats stream rm` and the stream made
// again 1.5 s later with the consumer in it (a start, another replica's
// healer): in some rounds the new stream's events at the sequences of the
// deleted stream's events this replica held are acked at the server and
// never delivered, and a deleted stream's event is delivered after the
// new stream's were (old2 below), seconds after the lease was lost, not
// in the second before. Proved: the loss (acked, nothing pending, never
// sent). The mechanism as read, not proved step by step: the orderer
// dedupes what it admits by origin (partition and stream sequence:
// order_lanes.go admit), and a deleted stream's message still in its
// hands (kept in a lane when the pull is pinned again by the new consumer
// before the lease's proof finds it unpinned, or admitted after the lease
// was lost, from the old pull's buffer or redelivered run) shadows the new
// stream's event at its sequence, which is dropped unsettled; the old
// message's ack then settles it. Rounds, at different phases against the
// lease's proof (every second), as it does not happen every time (red at
// round 4 of 6 once, at round 10 of 12 in 2 runs of 2).
func TestReviewRev30AnOrderedSinkTakesTheNewStreamsEventsForTheOldOnesAndLosesThem(t *testing.T) {
	t.Skip("KNOWN DEFECT (docs/design.md, \"Self-healing consumers\"): an ordered sink whose events stream is deleted and made again " +
		"within seconds can lose the new stream's events at the sequences of the deleted stream's events its lanes held (red 4 of 4 runs " +
		"before; a fix dropping the lanes at the healer's orphaning made it wait past the test's 45 s instead, and was not landed)")
	t.Parallel() // waits on the server and the lease, not on the CPU
	e := testenv.New(t)
	sink := orderedSink(e)
	sink.Timeout = time.Minute
	h := newHolding()
	wrap := func(_ string, s sinks.Sink) sinks.Sink { h.Sink = s; return h }
	opts := func(c *config.Dispatcher) { c.AckWait = time.Minute; c.ShutdownGrace = 500 * time.Millisecond }
	e.StartWrapped([]config.Sink{sink}, gatewayRoute, wrap, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stream, name := e.Topo.EventsStream(), topology.SinkConsumer("gateway")

	for round := range 12 {
		// Two of one user's events: the first held at the vendor, the
		// second waiting behind it in its lane.
		user := fmt.Sprintf("user-old%d", round)
		old1, old2 := testenv.Track(t, "order_paid", user), testenv.Track(t, "order_paid", user)
		h.hold(old1.ID)
		e.Publish(old1)
		top := e.Publish(old2).Sequence
		gate, started, _ := h.chans(old1.ID)
		waitClosed(t, started, 15*time.Second, "old1's request started")
		c, err := e.JS.Consumer(ctx, stream, name)
		if err != nil {
			t.Fatal(err)
		}
		cfg := c.CachedInfo().Config

		// Deleted at a different phase each round against the lease's
		// proof, whose round this test's rounds otherwise follow (their
		// events are delivered as it proves the pin).
		time.Sleep(time.Duration(round*170%1000) * time.Millisecond)
		if err := e.JS.DeleteStream(ctx, stream); err != nil {
			t.Fatal(err)
		}
		// Gone a while: the operator's rm, then a start making it again.
		time.Sleep(1500 * time.Millisecond)
		if err := e.Topo.Ensure(ctx, e.JS); err != nil {
			t.Fatal(err)
		}
		cfg.Metadata[topology.StartMetadata] = "1"
		testenv.Eventually(t, 20*time.Second, "the consumer made again in the stream made again", func() bool {
			_, _, err := topology.RecreateConsumer(ctx, e.JS, stream, cfg, 1) // kept if this replica's healer made it first
			return err == nil
		})
		// The new stream's events, up to the old ones' sequences.
		var fresh []string
		for seq := uint64(0); seq < top; {
			ev := testenv.Track(t, "order_paid", fmt.Sprintf("user-new%d", round))
			fresh = append(fresh, ev.ID)
			seq = e.Publish(ev).Sequence
		}
		c, err = e.JS.Consumer(ctx, stream, name)
		if err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, "the new stream's events delivered to the replica", func() bool {
			info, err := c.Info(ctx)
			return err == nil && info.Delivered.Stream >= top
		})
		close(gate)

		var missing []int // their sequences in the new stream
		lost := false
		testenv.Eventually(t, 45*time.Second, "the new stream's events delivered, or settled without being delivered", func() bool {
			got := gatewayIDs(t, e)
			missing = missing[:0]
			for i, id := range fresh {
				if got[id] == 0 {
					missing = append(missing, i+1)
				}
			}
			if len(missing) == 0 {
				return true
			}
			info, err := c.Info(ctx)
			lost = err == nil && info.AckFloor.Stream >= top && info.NumAckPending == 0
			return lost
		})
		if lost {
			got := gatewayIDs(t, e)
			t.Fatalf("round %d: the new stream's events at sequences %v (of 1..%d; the deleted stream's old1 and old2 were at %d and %d, delivered %d and %d times) "+
				"were never delivered, yet the consumer has them all acked (nothing pending): lost. The deleted stream's events this ordered replica "+
				"held (kept in its lanes, or admitted after its lease was lost) shadowed the new stream's at the same sequences (admit dedupes by "+
				"origin), and their acks settled them", round, missing, top, top-1, top, got[old1.ID], got[old2.ID])
		}
		t.Logf("round %d: the new stream's events delivered", round)
	}
}
