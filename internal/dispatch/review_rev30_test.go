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
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// The keepers' epoch (787bdcc, ebef5b1) does not reach an ordered sink:
// its lanes hold their messages outside the keepers. One ordered replica
// holds a user's two events (old1 at the vendor, old2 behind it in its
// lane); an operator deletes the events stream, and a start makes it again
// within the second the replica waits before pulling again, stores new
// events up to the old ones' sequences, then makes the consumer. The
// replica's next pull is answered at once, which pins it, and in most
// rounds this comes before the lease's next proof (a proof that found no
// stream waits a second for the next). Before order_remade.go the orderer
// took the new events at old1's and old2's sequences for redeliveries of
// the ones it held (it deduped by sequence alone) and dropped them; the
// first proof of the new pin then counted old1 and old2 as held, passed,
// and their acks settled the new events: acked, never delivered (red in 3
// of 3 runs, at round 2). Every other round is unkeyed (no subject): each
// event alone in its lane, the usual path under the orderer.
//
// (Until 2026-12-08 this test waited 1.5 s before making the stream again:
// the lease always saw no pin first and dropped the lanes, so the defect
// never happened, and its reds were its own race, reading the vendor
// before the consumer: an event acked in between looked lost.)
func TestReviewRev30AnOrderedSinkTakesTheNewStreamsEventsForTheOldOnesAndLosesThem(t *testing.T) {
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
		// second waiting behind it in its lane. Every other round without
		// a subject, so without a key: each alone in an unkeyed lane.
		user := fmt.Sprintf("user-old%d", round)
		keyed := func(user string) []envelope.Option {
			if round%2 == 1 {
				return nil
			}
			return []envelope.Option{envelope.WithSubject(user)}
		}
		old1, old2 := testenv.Track(t, "order_paid", user, keyed(user)...), testenv.Track(t, "order_paid", user, keyed(user)...)
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
		// Gone a while: the operator's rm, then a start making it again,
		// within the second the replica waits before it pulls again after
		// "consumer deleted", and at a different phase each round against
		// the lease's proofs: a proof that found no stream is not made
		// again for a second, so the pull may come first.
		time.Sleep(time.Duration(500+round*37%400) * time.Millisecond)
		if err := e.Topo.Ensure(ctx, e.JS); err != nil {
			t.Fatal(err)
		}
		// The new stream's events, up to the old ones' sequences, stored
		// before the consumer is made: its first pull request is answered at
		// once, which pins it, perhaps before the lease's next proof.
		var fresh []string
		for seq := uint64(0); seq < top; {
			ev := testenv.Track(t, "order_paid", fmt.Sprintf("user-new%d", round), keyed(fmt.Sprintf("user-new%d", round))...)
			fresh = append(fresh, ev.ID)
			seq = e.Publish(ev).Sequence
		}
		cfg.Metadata[topology.StartMetadata] = "1"
		testenv.Eventually(t, 20*time.Second, "the consumer made again in the stream made again", func() bool {
			_, _, err := topology.RecreateConsumer(ctx, e.JS, stream, cfg, 1) // kept if this replica's healer made it first
			return err == nil
		})
		c, err = e.JS.Consumer(ctx, stream, name)
		if err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 30*time.Second, "the new stream's events delivered to the replica", func() bool {
			info, err := c.Info(ctx)
			return err == nil && info.Delivered.Stream >= top
		})
		close(gate)

		// Delivered, however long it takes: an old message's ack may settle
		// the new one at its sequence before this replica delivers it
		// (order_remade.go), so "acked and not at the vendor" is no loss
		// yet. A lost event never comes; 45 s is far past any delivery.
		deadline := time.Now().Add(45 * time.Second)
		for {
			var missing []int // their sequences in the new stream
			got := gatewayIDs(t, e)
			for i, id := range fresh {
				if got[id] == 0 {
					missing = append(missing, i+1)
				}
			}
			if len(missing) == 0 {
				break
			}
			if time.Now().After(deadline) {
				floor, pending := uint64(0), -1
				if info, err := c.Info(ctx); err == nil {
					floor, pending = info.AckFloor.Stream, info.NumAckPending
				}
				t.Fatalf("round %d: the new stream's events at sequences %v (of 1..%d; the deleted stream's old1 and old2 were at %d and %d, "+
					"delivered %d and %d times) never reached the vendor in 45 s (the consumer's ack floor %d, %d pending): lost. The deleted "+
					"stream's events this ordered replica held shadowed the new stream's at the same sequences, and their acks settled them",
					round, missing, top, top-1, top, got[old1.ID], got[old2.ID], floor, pending)
			}
			time.Sleep(20 * time.Millisecond)
		}
		t.Logf("round %d: the new stream's events delivered", round)
	}
}
