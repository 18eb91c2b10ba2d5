package dispatch_test

// Review of the held message (held.go: a keyed batcher holds each event as
// its body, headers and ack handle, and settles it itself): what becomes
// of the events a keyed batcher holds when the dispatcher around it stops,
// loses its connection or its consumer.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// gatewayOrder is each user's event ids in the order the Metrix gateway
// accepted them, duplicates included.
func gatewayOrder(t *testing.T, e *testenv.Env) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, r := range e.Emu.Vendor(emulator.MetrixGateway).Requests() {
		if r.Status != 200 {
			continue
		}
		var body struct {
			CustomUserID string
			Messages     []struct{ Type, ID string }
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatal(err)
		}
		for _, m := range body.Messages {
			if m.Type != "user" {
				out[body.CustomUserID] = append(out[body.CustomUserID], m.ID)
			}
		}
	}
	return out
}

// Review (held messages at shutdown): a dispatcher told to stop delivers
// what its keyed batcher holds within shutdown_grace, one request per key
// group, while a new replica takes over the consumer (a rolling deploy).
// The groups still waiting for a sender must stay this dispatcher's while
// it drains them: kept alive past ack_wait, or the server hands them to
// the new replica while the old one still sends them, and the vendor gets
// them twice with nothing failing. 12 users' events held behind one slow
// sender (300 ms a request, about 3.6 s to drain, ack_wait 1 s, grace
// 10 s): every event delivered once, none by the new replica.
func TestKeyedBatchHeldEventsStayOursWhileDrainingAtShutdown(t *testing.T) {
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 200, Latency: 300 * time.Millisecond})
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 1
	sink.Batch = &config.Batch{MaxItems: 2, MaxWait: 20 * time.Millisecond}
	opts := func(d *config.Dispatcher) { d.AckWait, d.ShutdownGrace = time.Second, 10*time.Second }
	a := e.Start([]config.Sink{sink}, gatewayRoute, opts)

	const users = 12
	var ids []string
	for i := range users {
		env := testenv.Track(t, "order_paid", fmt.Sprintf("drain-%02d", i))
		ids = append(ids, env.ID)
		e.Publish(env)
	}
	ctx := context.Background()
	cons, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	// Every event in a's hands (none left for the next replica to pull
	// but what a gives back), the first request out.
	testenv.Eventually(t, 10*time.Second, "every event pulled by a, a request out", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending >= users-2 && len(vendor.Requests()) > 0
	})
	stopped := make(chan error, 1)
	go func() { stopped <- a.Stop() }()
	b := e.Start([]config.Sink{sink}, gatewayRoute, opts)
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("a did not stop within 30 s")
	}
	testenv.Eventually(t, 20*time.Second, "every event delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 10*time.Second, "the consumer idle", func() bool { return e.Idle("gateway") })

	dups := 0
	for _, n := range gatewayIDs(t, e) {
		dups += n - 1
	}
	t.Logf("a drained %d events, b delivered %d; %d duplicates", a.Tally.DeliveredTo("gateway"), b.Tally.DeliveredTo("gateway"), dups)
	if dups > 0 || b.Tally.DeliveredTo("gateway") > 0 {
		t.Errorf("%d duplicate deliveries, %d by the new replica: events a held while draining were handed out again past ack_wait", dups, b.Tally.DeliveredTo("gateway"))
	}
	for u, got := range gatewayOrder(t, e) {
		if len(got) != 1 {
			t.Errorf("user %s: delivered %s", u, strings.Join(got, " "))
		}
	}
	if dl := deadLetters(t, e, dlq.Filter{}); len(dl) > 0 {
		t.Errorf("%d dead letters", len(dl))
	}
}

// heldScenario is a Metrix gateway sink batching per user behind one slow
// sender (300 ms a request), with 12 users' events published, two each,
// all pulled and the first request out: most of them held in the keyed
// batcher's groups when the test does something to the dispatcher.
func heldScenario(t *testing.T, e *testenv.Env, opts ...func(*config.Dispatcher)) (ids []string, order map[string][]string, d *testenv.Dispatcher) {
	t.Helper()
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 200, Latency: 300 * time.Millisecond})
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 1
	sink.Batch = &config.Batch{MaxItems: 2, MaxWait: 20 * time.Millisecond}
	d = e.Start([]config.Sink{sink}, gatewayRoute, opts...)
	order = map[string][]string{}
	for range 2 {
		for i := range 12 {
			u := fmt.Sprintf("held-%02d", i)
			env := testenv.Track(t, "order_paid", u)
			ids = append(ids, env.ID)
			order[u] = append(order[u], env.ID)
			e.Publish(env)
		}
	}
	ctx := context.Background()
	cons, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "every event pulled, a request out", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumPending == 0 && info.NumAckPending >= len(ids)-4 && len(vendor.Requests()) > 0
	})
	return ids, order, d
}

// firstOrder is each user's ids in the order they were first accepted.
func firstOrder(delivered map[string][]string) map[string][]string {
	out := map[string][]string{}
	for u, ids := range delivered {
		seen := map[string]bool{}
		for _, id := range ids {
			if !seen[id] {
				seen[id] = true
				out[u] = append(out[u], id)
			}
		}
	}
	return out
}

// Review (held messages across a reconnect): a held message is settled by
// publishing to its reply subject on the dispatcher's connection, whatever
// became of the connection it was pulled on. nats-server restarted (the
// same store and address) while 24 events are held: the connection
// reconnects, the acks and in-progress acks sent meanwhile or after are
// taken by the restarted server, and every event is delivered once, each
// user's in order, none dead-lettered, nothing left pending (counted once
// the dispatcher has stopped: a copy handed out again would be in its
// groups, and delivered as it stops).
func TestKeyedBatchHeldEventsSettleAcrossAReconnect(t *testing.T) {
	t.Parallel() // waits on replicas and the vendor, not on the CPU
	e := testenv.New(t)
	ids, order, d := heldScenario(t, e, func(d *config.Dispatcher) { d.ShutdownGrace = 10 * time.Second })
	e.RestartServer(0)
	testenv.Eventually(t, 30*time.Second, "every event delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 20*time.Second, "the consumer idle", func() bool { return e.Idle("gateway") })
	if err := d.Stop(); err != nil { // what it still holds is delivered as it stops
		t.Fatal(err)
	}
	delivered := gatewayOrder(t, e)
	for u, want := range order {
		if got := delivered[u]; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("user %s: delivered\n %v\nwant (publish order, each once)\n %v", u, got, want)
		}
	}
	if dl := deadLetters(t, e, dlq.Filter{}); len(dl) > 0 {
		t.Errorf("%d dead letters", len(dl))
	}
}

// Review (held messages when their consumer is deleted and recreated by
// the healer): the consumer deleted while 24 events are held; the healer
// recreates it above its ack floor, which the held events are above, so
// the new consumer delivers them again while the old deliveries are still
// held (their acks, for the old consumer's deliveries, are not the new
// one's): at least once after a lost consumer, as heal.go says. What must
// hold: every event delivered, each user's first deliveries in order,
// none dead-lettered, and nothing held for ever (the consumer idle).
func TestKeyedBatchHeldEventsSurviveTheirConsumerRecreated(t *testing.T) {
	t.Parallel() // waits on replicas and the vendor, not on the CPU
	e := testenv.New(t)
	ids, order, d := heldScenario(t, e)
	if err := e.JS.DeleteConsumer(context.Background(), e.Topo.EventsStream(), topology.SinkConsumer("gateway")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "every event delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 30*time.Second, "the consumer back and idle", func() bool { return e.Idle("gateway") })
	delivered := gatewayOrder(t, e)
	dups := 0
	for _, got := range delivered {
		dups += len(got)
	}
	dups -= len(ids)
	first := firstOrder(delivered)
	for u, want := range order {
		if got := first[u]; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("user %s: first delivered\n %v\nwant (publish order)\n %v\n(all: %v)", u, got, want, delivered[u])
		}
	}
	if dl := deadLetters(t, e, dlq.Filter{}); len(dl) > 0 {
		t.Errorf("%d dead letters", len(dl))
	}
	lost, down := d.Tally.ConsumersLost("gateway")
	if lost == 0 || down != 0 {
		t.Errorf("consumer losses counted %d, down %d; want the loss seen and healed", lost, down)
	}
	t.Logf("%d events, %d delivered again after the consumer was recreated", len(ids), dups)
}

// Review (Chapar's history headers on a held event): a dead letter
// replayed to a keyed sink comes back through its retry consumer with its
// history in headers (origin, receipt, replays, the attempt log), is held
// as body and header strings, and its delivery is made again from them
// when its batch leaves. Rejected again, its dead letter is the same
// record carried on: replays 1, both attempts logged, the first receipt
// and origin, the producer's multi-valued header; replayed once more, it
// is delivered.
func TestKeyedBatchReplayOfAHeldEventKeepsItsHistory(t *testing.T) {
	t.Parallel() // waits on replays and the vendor, not on the CPU
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 400, Code: "BAD_REQUEST", Count: 1})
	sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 10, 50*time.Millisecond)
	e.Start([]config.Sink{sink}, gatewayRoute)

	env := testenv.Track(t, "order_paid", "replayed-user")
	msg, ack := publishNoted(t, e, env)
	var first *dlq.Record
	testenv.Eventually(t, 15*time.Second, "the first dead letter", func() bool {
		recs := deadLetters(t, e, dlq.Filter{})
		if len(recs) == 1 {
			first = recs[0]
		}
		return first != nil
	})

	replay := func() {
		t.Helper()
		if _, err := dlq.NewStore(e.JS, e.Topo).Replay(context.Background(), dlq.Filter{}, dlq.ReplayOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	vendor.SetFault(emulator.Fault{Status: 400, Code: "BAD_REQUEST", Count: 1})
	replay()
	var again *dlq.Record
	testenv.Eventually(t, 15*time.Second, "the replay's dead letter", func() bool {
		recs := deadLetters(t, e, dlq.Filter{})
		if len(recs) == 1 && recs[0].Replays == 1 {
			again = recs[0]
		}
		return again != nil
	})
	if again.EventID != env.ID || again.Origin != first.Origin || first.Origin != ack.Sequence || !again.Received.Equal(first.Received) {
		t.Errorf("replay's dead letter: event %s, origin %d, received %v; want %s, %d, %v (the first's)",
			again.EventID, again.Origin, again.Received, env.ID, ack.Sequence, first.Received)
	}
	if again.Log.Total != 2 || len(again.Log.Attempts) != 2 || again.Log.Attempts[1].Replay != 1 || again.Attempts != 1 {
		t.Errorf("replay's dead letter: %d attempts this run, log %+v; want 1, and both attempts logged", again.Attempts, again.Log)
	}
	if got := again.Header.Values("X-Note"); fmt.Sprint(got) != "[keep me]" {
		t.Errorf("replay's dead letter's headers %v, want X-Note [keep me]", again.Header)
	}
	if string(again.Data) != string(msg.Data) {
		t.Errorf("replay's dead letter's body %q, want %q", again.Data, msg.Data)
	}

	replay()
	testenv.Eventually(t, 15*time.Second, "the second replay delivered", allDelivered(t, e, []string{env.ID}))
}

// Review (held past ack_wait behind a slow request): a vendor that takes
// 1.5 × ack_wait (1 s) a request keeps each user's batch out that long,
// and the user's next events wait in its group behind it, held as body
// and ack handle, longer than ack_wait: the keeper's in-progress acks on
// the held messages keep them ours. 3 users, 4 events each, 2 a request:
// every event delivered once, each user's in order, counted once the
// dispatcher has stopped (a copy handed out again would be in its groups,
// and delivered as it stops).
func TestKeyedBatchHeldBehindASlowRequestPastAckWait(t *testing.T) {
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 200, Latency: 1500 * time.Millisecond})
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 3
	sink.Timeout = 5 * time.Second
	sink.Batch = &config.Batch{MaxItems: 2, MaxWait: 20 * time.Millisecond}
	d := e.Start([]config.Sink{sink}, gatewayRoute, func(d *config.Dispatcher) { d.AckWait, d.ShutdownGrace = time.Second, 10*time.Second })
	order := map[string][]string{}
	var ids []string
	for range 4 {
		for _, u := range []string{"slow-a", "slow-b", "slow-c"} {
			env := testenv.Track(t, "order_paid", u)
			ids = append(ids, env.ID)
			order[u] = append(order[u], env.ID)
			e.Publish(env)
		}
	}
	testenv.Eventually(t, 20*time.Second, "every event delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 10*time.Second, "the consumer idle", func() bool { return e.Idle("gateway") })
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	delivered := gatewayOrder(t, e)
	for u, want := range order {
		if got := delivered[u]; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("user %s: delivered\n %v\nwant (publish order, each once)\n %v", u, got, want)
		}
	}
	t.Logf("%d requests", len(vendor.Requests()))
}
