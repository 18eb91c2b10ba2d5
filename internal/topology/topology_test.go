package topology_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/topology"
)

// start is jetStream (partitions_test.go) with the default layout ensured.
func start(t *testing.T) (jetstream.JetStream, topology.Topology) {
	t.Helper()
	_, js := jetStream(t)
	topo := topology.New(config.Default().Streams)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	// Ensure is idempotent: every replica runs it.
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	return js, topo
}

// A scheduled retry is stored in the retries stream, arrives on the sink's
// due subject no earlier than asked, with Chapar's headers, and leaves the
// work queue once acked.
func TestScheduledRetryArrivesWhenDueAndLeaves(t *testing.T) {
	js, topo := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := topo.EnsureSink(ctx, js, "s1", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 10})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(1500 * time.Millisecond)
	m := nats.NewMsg(topo.RetryWaitSubject("s1", "7-0-1"))
	m.Header.Set(topology.HeaderAttempts, "1")
	m.Data = []byte(`{"id":"e1"}`)
	topology.Schedule(m.Header, at, topo.RetryDueSubject("s1"))
	for range 2 { // written twice: stored once
		if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID("r1")); err != nil {
			t.Fatal(err)
		}
	}
	msgs, err := cons.Retries.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got jetstream.Msg
	for msg := range msgs.Messages() {
		got = msg
	}
	if got == nil {
		t.Fatalf("no retry arrived: %v", msgs.Error())
	}
	t.Logf("asked %s, arrived %s", at.Format(time.StampMilli), time.Now().Format(time.StampMilli))
	if now := time.Now(); now.Before(at) {
		t.Errorf("retry arrived at %s, before %s", now, at)
	}
	if got.Headers().Get(topology.HeaderAttempts) != "1" || string(got.Data()) != `{"id":"e1"}` {
		t.Errorf("retry lost its headers or body: %v %q", got.Headers(), got.Data())
	}
	if err := got.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	idle := func() bool { ok, err := topo.Idle(ctx, js, []string{"s1"}); return err == nil && ok }
	deadline := time.Now().Add(5 * time.Second)
	for !idle() {
		if time.Now().After(deadline) {
			st, _ := js.Stream(ctx, topo.RetriesStream())
			info, _ := st.Info(ctx, jetstream.WithSubjectFilter(">"))
			t.Fatalf("retries stream not empty after ack: %+v", info.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// A sink switched to ordered at start gets a pinned events consumer, kept
// (not recreated: its position and unacked messages stay) and switched back
// the same way; while pinned, of two clients pulling only one gets messages.
func TestSinkSwitchesBetweenOrderedAndUnordered(t *testing.T) {
	js, topo := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	plain := topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 100}
	pinned := plain
	pinned.PinnedTTL = 7 * time.Second
	policy := func(c jetstream.Consumer) jetstream.ConsumerConfig {
		t.Helper()
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.Config
	}
	cons, err := topo.EnsureSink(ctx, js, "s1", plain)
	if err != nil {
		t.Fatal(err)
	}
	if c := policy(cons.Events[0]); c.PriorityPolicy != jetstream.PriorityPolicyNone || len(c.PriorityGroups) != 0 {
		t.Fatalf("unordered sink has priority %v %v", c.PriorityPolicy, c.PriorityGroups)
	}
	for i := range 3 {
		if _, err := js.Publish(ctx, topo.EventSubject("chapar.track"), []byte{byte('a' + i)}); err != nil {
			t.Fatal(err)
		}
	}
	// One message is in flight (unacked) when the sink switches.
	inFlight, err := cons.Events[0].Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for range inFlight.Messages() {
	}

	for _, s := range []topology.ConsumerSettings{pinned, pinned} { // twice: idempotent
		if cons, err = topo.EnsureSink(ctx, js, "s1", s); err != nil {
			t.Fatal(err)
		}
	}
	c := policy(cons.Events[0])
	if c.PriorityPolicy != jetstream.PriorityPolicyPinned || c.PinnedTTL != 7*time.Second ||
		len(c.PriorityGroups) != 1 || c.PriorityGroups[0] != topology.OrderGroup {
		t.Fatalf("ordered sink's consumer: policy %v ttl %s groups %v", c.PriorityPolicy, c.PinnedTTL, c.PriorityGroups)
	}
	info, err := cons.Events[0].Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 1 || info.NumPending != 2 {
		t.Fatalf("switching lost the consumer's state: %d unacked, %d pending; want 1 and 2", info.NumAckPending, info.NumPending)
	}

	// Two "replicas" pull in the group: one is pinned and gets both
	// pending messages, the other none.
	got := make([]int, 2)
	for i := range got {
		c, err := js.Consumer(ctx, topo.EventsStream(), topology.SinkConsumer("s1"))
		if err != nil {
			t.Fatal(err)
		}
		batch, err := c.Fetch(2, jetstream.FetchMaxWait(time.Second), jetstream.FetchPriorityGroup(topology.OrderGroup))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			got[i]++
			_ = m.Ack()
		}
	}
	if got[0] != 2 || got[1] != 0 {
		t.Fatalf("pinned consumer gave %v messages to two clients; want [2 0]", got)
	}

	if cons, err = topo.EnsureSink(ctx, js, "s1", plain); err != nil {
		t.Fatal(err)
	}
	if c := policy(cons.Events[0]); c.PriorityPolicy != jetstream.PriorityPolicyNone || len(c.PriorityGroups) != 0 {
		t.Fatalf("sink switched back still has priority %v %v", c.PriorityPolicy, c.PriorityGroups)
	}
}
