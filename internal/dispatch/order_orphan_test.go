package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// A new holder's exclusivity proof compared counts: the consumer's
// num_ack_pending against what the replica holds. A late ack from the old
// holder (JetStream removes the pending entry by stream sequence, whoever
// holds the message now) of a message the new holder holds again makes
// the counts equal while another message is still pending elsewhere: one
// delivered to the old holder and never settled (a fault run: a delivery
// recorded at a consumer leader step-down that never reached any replica,
// due only after ack_wait). The new holder then delivered the key's later
// event before it.
//
// Here a raw client is the old holder: it pulls u's first event (E1) and
// v's (X) under the pin and keeps both unacked; the pin moves to the
// Chapar replica; X is handed back (redelivered to the replica), and the
// raw client then acks X with its old reply subject. The counts agree
// (one pending, one held) while E1 is still out. u's second event (E2),
// published now, must reach the vendor only after E1, which comes back
// to the replica after ack_wait.
func TestOrderNewPinWaitsForAMessageALateAckCountedOut(t *testing.T) {
	e := testenv.New(t)
	k := newKeyed(t, []string{"u", "v"}, 2) // u#0 (E1), v#0 (X), u#1 (E2), v#1
	sink := orderedSink(e)
	const ackWait = 3 * time.Second
	withAckWait := func(c *config.Dispatcher) { c.AckWait = ackWait }
	ctx := context.Background()
	rawNC, c, e1, x, rawPin := rawHolderOfE1AndX(t, e, k, sink, withAckWait)

	r := e.Start([]config.Sink{sink}, gatewayRoute, withAckWait)
	if p := pinnedClient(t, e); p != rawPin {
		t.Fatalf("the pin moved from the raw client (%q) to %q when the replica started", rawPin, p)
	}
	unpinOrderedConsumer(t, e) // the replica's waiting pull takes the pin
	if err := x.Nak(); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "X redelivered to the replica", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.Delivered.Consumer >= 3
	})
	// The late ack, on X's old reply subject (nats.go would refuse a
	// second settle of the same message).
	if err := rawNC.Publish(x.Reply(), []byte("+ACK")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "one pending (E1), held by no one", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.NumAckPending == 1
	})
	k.publish(e, 2, 4)
	testenv.Eventually(t, 20*time.Second, "every event delivered", k.delivered(t, e))
	k.checkOrder(t, e, false)
	_ = e1 // kept unacked: it falls due after ack_wait
	// Counted once its answer is settled, after the vendor has it: wait
	// for the count, then check it is not more.
	testenv.Eventually(t, 10*time.Second, "every delivery counted", func() bool { return r.Tally.DeliveredTo("gateway") >= len(k.envs) })
	testenv.Eventually(t, 10*time.Second, "nothing left", func() bool { return e.Idle("gateway") })
	if n := r.Tally.DeliveredTo("gateway"); n != len(k.envs) {
		t.Errorf("the replica delivered %d, want %d (once each)", n, len(k.envs))
	}
}

// rawHolderOfE1AndX makes the ordered sink's consumer with a first
// replica that stops and lets the pin go, publishes k's first round (u's
// E1, v's X), and has a raw client pull both under its pin and hold them
// unacked: the old holder of the late-ack tests. It returns the raw
// client's connection, the consumer, E1, X and the raw client's pin.
func rawHolderOfE1AndX(t *testing.T, e *testenv.Env, k *keyed, sink config.Sink, withAckWait func(*config.Dispatcher)) (
	*nats.Conn, jetstream.Consumer, jetstream.Msg, jetstream.Msg, string) {
	t.Helper()
	// A first replica makes the consumer, then stops and lets the pin go.
	if err := e.Start([]config.Sink{sink}, gatewayRoute, withAckWait).Stop(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	rawNC, js := e.Connect()
	c, err := js.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the pin released", func() bool { return pinnedClient(t, e) == "" })
	k.publish(e, 0, 2)
	var held []jetstream.Msg // the raw client's, under its pin
	testenv.Eventually(t, 10*time.Second, "the raw client pinned with E1 and X", func() bool {
		b, err := c.Fetch(2-len(held), jetstream.FetchPriorityGroup(topology.OrderGroup), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return false
		}
		for m := range b.Messages() {
			held = append(held, m)
		}
		return len(held) == 2
	})
	e1, x := held[0], held[1]
	if meta, _ := x.Metadata(); meta == nil || meta.Sequence.Stream != 2 {
		t.Fatalf("X is not stream sequence 2: %+v", meta)
	}
	rawPin := pinnedClient(t, e)
	if rawPin == "" || x.Headers().Get("Nats-Pin-Id") != rawPin {
		t.Fatalf("the raw client is not pinned (server %q, message %q)", rawPin, x.Headers().Get("Nats-Pin-Id"))
	}
	return rawNC, c, e1, x, rawPin
}
