package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// Review (h-healer): a healer that had not seen the lead mark wins the
// recreation of a lost lead consumer and makes it unmarked, reading only
// its sink's types, from above the floor it last read. Until the healer
// that knows the mark puts it back (topology.RestoreLead, at its settle
// time or next look), that consumer's pulls pass over what its types do
// not take; RestoreLead then widens it where it stands. A stray the old
// lead left to this sink (its consumer read every subject when the old
// lead saw the stray), still in the sink's backlog at the loss, is then
// below the widened consumer's position, and was never read by it:
// neither delivered nor dead-lettered. Not a window of seconds in time:
// every stray between the recreation's start and the first event of the
// sink's types delivered before the mark is back.
func TestReviewRestoredLeadJudgesWhatItsNarrowRecreationPassedOver(t *testing.T) {
	t.Parallel() // mostly waits out a healer's look
	e := testenv.New(t)
	aSinks, aRoutes, bSinks, bRoutes := healLeadConfigs(e)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, name := e.Topo.EventsStream(), topology.SinkConsumer("gateway")
	a := e.Start(aSinks, aRoutes)
	bc, err := e.JS.Consumer(ctx, stream, name)
	if err != nil {
		t.Fatal(err)
	}
	bound := bc.CachedInfo().Config // a's bind: a's fence, gateway's types, no mark
	b := e.Start(bSinks, bRoutes)
	testenv.Eventually(t, 10*time.Second, "a's replica fenced off gateway", func() bool { return a.Tally.Fenced("gateway") })
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	// A stray left to gateway by first, a's lead (gateway, the marked
	// lead, reads every subject), unread by gateway (a is fenced off it,
	// b stopped).
	stray := publishStray(t, e)
	testenv.Eventually(t, 20*time.Second, "first read past the stray", func() bool { return e.Idle("first") })

	// gateway's consumer is lost; the healer of a replica that had not
	// seen the mark recreates it as a bound it, from above its floor.
	c, err := e.JS.Consumer(ctx, stream, name)
	if err != nil {
		t.Fatal(err)
	}
	floor := c.CachedInfo().AckFloor.Stream
	if err := e.JS.DeleteConsumer(ctx, stream, name); err != nil {
		t.Fatal(err)
	}
	if _, created, err := topology.RecreateConsumer(ctx, e.JS, stream, bound, floor+1); err != nil || !created {
		t.Fatalf("the stale healer's recreation: created %v, %v", created, err)
	}
	// That replica's pull (here the test's) takes an event of gateway's
	// types: the consumer's position moves past the stray. It settles
	// only that event: on a busy machine the healer that knows the mark
	// may have widened the consumer first, and the pull is then handed
	// the stray itself, which a replica would route and deliver (acked
	// here, the test itself would lose it).
	ack := e.Publish(testenv.Track(t, "signup", "u2"))
	nc, err := e.JS.Consumer(ctx, stream, name)
	if err != nil {
		t.Fatal(err)
	}
	if batch, err := nc.Fetch(1, jetstream.FetchMaxWait(2*time.Second)); err == nil {
		for m := range batch.Messages() {
			if meta, err := m.Metadata(); err == nil && meta.Sequence.Stream == ack.Sequence {
				_ = m.Ack()
			} else {
				_ = m.Nak()
			}
		}
	}
	testenv.Eventually(t, 10*time.Second, "gateway's consumer past the stray", func() bool {
		c, err := e.JS.Consumer(ctx, stream, name)
		return err == nil && c.CachedInfo().Delivered.Stream >= ack.Sequence
	})
	testenv.Eventually(t, 20*time.Second, "gateway marked the lead again, reading every subject", func() bool {
		s := stateOf(t, e, "gateway")
		return s.lead && readsAll(e, s)
	})
	testenv.Eventually(t, 20*time.Second, "the stray delivered to gateway or dead-lettered for it", func() bool {
		return gatewayIDs(t, e)[stray.ID]+unknownFor(t, e, "gateway")[stray.ID] > 0
	})
}
