package dispatch_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Issue 20: an operator's pause on a three-node cluster (R3 streams,
// consumers and pauses bucket) survives leader changes. An ordered sink,
// two replicas, a slow vendor, events flowing when the pause comes; while
// paused, the server leading the sink's consumer restarts, the pauses
// bucket's stream leader steps down and then its server restarts (which
// may cut the replicas' watches of the pauses), and more events are
// published. No request reaches the vendor from the pause to the
// resumption, both replicas stay paused throughout, and after the
// resumption every event arrives, each key's in order, those published
// while paused exactly once (one delivered before the pause may come
// again if its ack was lost with a leader: at-least-once; logged).
func TestClusterOperatorPauseSurvivesLeaderChanges(t *testing.T) {
	t.Parallel() // waits on restarts and elections, not the CPU (ack_wait 3 s: a keep-alive may come 2 s late)
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	e := testenv.NewCluster(t, 3)
	k := newKeyed(t, []string{"u0", "u1", "u2", "u3"}, 15)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	// 250 ms a request, not 50: the pause must reach both replicas
	// through the cluster before the 40 events are all out, and at 50 ms
	// a loaded machine let all 40 through first (review rev17: 9 to 40 at
	// the pause over five runs beside other tests; 8 of 40 at 250 ms).
	vendor.SetFault(emulator.Fault{Status: 200, Latency: 250 * time.Millisecond})
	sink := orderedSink(e)
	withAckWait := func(c *config.Dispatcher) { c.AckWait = 3 * time.Second }
	a := e.Start([]config.Sink{sink}, gatewayRoute, withAckWait)
	b := e.Start([]config.Sink{sink}, gatewayRoute, withAckWait)
	const before = 40 // of 60: the rest is published while paused
	k.publish(e, 0, before)
	testenv.Eventually(t, 30*time.Second, "a first event delivered", func() bool { return len(vendor.Requests()) > 0 })

	setPaused(t, e, "gateway", true)
	testenv.Eventually(t, 10*time.Second, "both replicas paused", allPaused(true, a, b))
	// Requests that passed the gate before the pause are answered
	// meanwhile: what counts is one that arrives after they are done.
	testenv.Eventually(t, 10*time.Second, "requests in flight at the pause answered", nothingSending(vendor, a, b))
	pausedAt := time.Now()
	if n := len(vendor.Requests()); n >= before {
		t.Fatalf("all %d events were delivered before the pause: the test paused nothing", n)
	}
	// The acks of what was delivered reach the server before the
	// leaders move. (One sent as a leader steps down may still be lost
	// with it, and its event delivered again: at-least-once. Checked
	// below apart from the events published while paused, which nothing
	// had in hand then.)
	for _, d := range []*testenv.Dispatcher{a, b} {
		if err := d.NC.FlushTimeout(5 * time.Second); err != nil {
			t.Fatal(err)
		}
	}
	quiet := func(what string) {
		t.Helper()
		if !allPaused(true, a, b)() {
			t.Fatalf("%s: a replica is no longer paused", what)
		}
		for _, r := range vendor.Requests() {
			if r.Arrived.After(pausedAt) {
				t.Fatalf("%s: a request reached the vendor while paused (%s after the pause)", what, r.Arrived.Sub(pausedAt).Round(time.Millisecond))
			}
		}
	}

	consumerLeader := leaderOf(t, func(ctx context.Context) (*jetstream.ClusterInfo, error) {
		c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
		if err != nil {
			return nil, err
		}
		return c.CachedInfo().Cluster, nil
	})
	restartServerNamed(t, e, consumerLeader)
	t.Logf("restarted %s, the sink's consumer's leader", consumerLeader)
	quiet("after the consumer leader's server restarted")

	pausesStream := "KV_" + e.Topo.PausesBucket()
	pausesLeader := func() string {
		return leaderOf(t, func(ctx context.Context) (*jetstream.ClusterInfo, error) {
			s, err := e.JS.Stream(ctx, pausesStream)
			if err != nil {
				return nil, err
			}
			return s.CachedInfo().Cluster, nil
		})
	}
	stepDown(t, e, "$JS.API.STREAM.LEADER.STEPDOWN."+pausesStream)
	t.Logf("stepped down the pauses bucket's leader")
	quiet("after the pauses bucket's leader stepped down")
	leader := pausesLeader()
	restartServerNamed(t, e, leader)
	t.Logf("restarted %s, the pauses bucket's leader", leader)

	for _, env := range k.envs[before:] {
		raw, _ := env.Marshal()
		publishWithRetry(t, e.JS, e.Topo.SubjectOf(env), env.ID, raw)
	}
	// Longer than the pause board's check of its bucket (5 s), so a
	// watch the restarts cut has been found and made again within it.
	stayedQuiet(t, 7*time.Second, "a request reached the vendor or a replica resumed", func() bool {
		if !allPaused(true, a, b)() {
			return true
		}
		for _, r := range vendor.Requests() {
			if r.Arrived.After(pausedAt) {
				return true
			}
		}
		return false
	})
	deliveredBefore := len(vendor.Requests())

	setPaused(t, e, "gateway", false)
	testenv.Eventually(t, 30*time.Second, "both replicas resumed", allPaused(false, a, b))
	testenv.Eventually(t, 90*time.Second, "every event delivered", k.delivered(t, e))
	resent := k.checkOrder(t, e, true)
	got := gatewayIDs(t, e)
	for _, env := range k.envs[before:] {
		if got[env.ID] != 1 {
			t.Errorf("event %s, published while paused, delivered %d times", env.ID, got[env.ID])
		}
	}
	if resent > 0 {
		t.Logf("%d events delivered before the pause were delivered again (an ack lost with a leader: at-least-once)", resent)
	}
	if dl := deadLetters(t, e, dlq.Filter{}); len(dl) > 0 {
		t.Errorf("%d dead letters, want none", len(dl))
	}
	t.Logf("%d requests before the pause, %d after the resumption", deliveredBefore, len(vendor.Requests())-deliveredBefore)
}

// Issue 20: JetStream's consumer pause, which holds a new lead's
// consumers still while it is widened (topology.HoldForWidening), on a
// three-node cluster. A replica of the old config pulls the sink's R3
// consumer when it is held; once what it had in hand is settled, the
// consumer's leader steps down, its server restarts, and the consumer is
// updated as the widening does (an update that does not carry the
// pause). Throughout, the server reports the
// consumer paused until the same time and its position does not move,
// and the vendor gets no event above that position (what the replica had
// pulled before the hold it delivers meanwhile: the pause stops the
// server's deliveries, not a replica's work in hand). Once released
// (topology.ReleaseWidened), every event is delivered exactly once.
func TestClusterConsumerHoldSurvivesLeaderChanges(t *testing.T) {
	t.Parallel() // waits on restarts and elections, not the CPU (ack_wait 3 s: a keep-alive may come 2 s late)
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	e := testenv.NewCluster(t, 3)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 200, Latency: 50 * time.Millisecond})
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	// Few in hand at a time, so the hold catches most of the backlog
	// in the stream.
	gateway.Concurrency, gateway.MaxAckPending = 2, 20
	routes := []config.Route{
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}},
		{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}},
	}
	withAckWait := func(c *config.Dispatcher) { c.AckWait = 3 * time.Second }
	replica := e.Start([]config.Sink{first, gateway}, routes, withAckWait)
	const n = 200
	ids := make([]string, n)
	seq := map[string]uint64{} // id → its stream sequence
	for i := range ids {
		env := testenv.Track(t, "order_paid", fmt.Sprintf("u%d", i%7))
		ids[i] = env.ID
		raw, _ := env.Marshal()
		seq[env.ID] = publishAt(t, e.JS, e.Topo.SubjectOf(env), env.ID, raw)
	}
	testenv.Eventually(t, 30*time.Second, "a first event delivered", func() bool { return len(vendor.Requests()) > 0 })

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	prior, err := e.Topo.PriorReads(ctx, e.JS, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	if !prior[0].Exists || prior[0].ReadsEverything() {
		t.Fatalf("gateway's consumer reads %+v: not one a lead's widening holds", prior[0])
	}
	until := time.Now().Add(2 * time.Minute)
	if err := e.Topo.HoldForWidening(ctx, e.JS, "gateway", prior, until); err != nil {
		t.Fatal(err)
	}
	consumer := func() *jetstream.ConsumerInfo {
		t.Helper()
		var info *jetstream.ConsumerInfo
		testenv.Eventually(t, 30*time.Second, "gateway's consumer's info", func() bool {
			ictx, icancel := context.WithTimeout(ctx, 2*time.Second)
			defer icancel()
			c, err := e.JS.Consumer(ictx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
			if err != nil {
				return false
			}
			info = c.CachedInfo()
			return info.Cluster != nil && info.Cluster.Leader != ""
		})
		return info
	}
	// Where the consumer stands once held: the pause is applied when
	// HoldForWidening returns.
	at := consumer().Delivered.Stream
	if at >= seq[ids[n-1]] {
		t.Fatalf("the consumer had delivered every event (stream sequence %d) before the hold: the test held nothing", at)
	}
	aboveHold := func() string {
		for id := range gatewayIDs(t, e) {
			if seq[id] > at {
				return id
			}
		}
		return ""
	}
	held := func(what string) {
		t.Helper()
		info := consumer()
		if !info.Paused || info.PauseRemaining <= 0 {
			t.Fatalf("%s: the consumer is not paused (paused %v, remaining %s)", what, info.Paused, info.PauseRemaining)
		}
		if got := info.Config.PauseUntil; got == nil || got.Sub(until).Abs() > time.Millisecond {
			t.Fatalf("%s: paused until %v, want %v", what, got, until)
		}
		if info.Delivered.Stream != at {
			t.Fatalf("%s: the held consumer moved from stream sequence %d to %d", what, at, info.Delivered.Stream)
		}
		if id := aboveHold(); id != "" {
			t.Fatalf("%s: event %s (stream sequence %d) reached the vendor; the consumer was held at %d", what, id, seq[id], at)
		}
	}
	held("held")
	// What the replica had in hand at the hold is delivered and acked
	// before the leaders move: an ack sent as a leader steps down or its
	// server stops may be lost, and that event delivered again
	// (at-least-once), which is not what this test is about.
	lost := settledAtHold(t, e, replica, ids, seq, at, consumer)
	held("held, nothing in hand")

	stepDown(t, e, "$JS.API.CONSUMER.LEADER.STEPDOWN."+e.Topo.EventsStream()+"."+topology.SinkConsumer("gateway"))
	held("after the consumer's leader stepped down")
	restartServerNamed(t, e, consumer().Cluster.Leader)
	held("after the consumer leader's server restarted")

	// The widening's update: the filter widened, the config otherwise as
	// the server has it (the fence in its metadata), without the pause.
	cfg := consumer().Config
	cfg.PauseUntil = nil
	cfg.FilterSubject, cfg.FilterSubjects = "", nil
	var updated jetstream.Consumer
	testenv.Eventually(t, 30*time.Second, "the consumer updated", func() bool {
		uctx, ucancel := context.WithTimeout(ctx, 2*time.Second)
		defer ucancel()
		updated, err = e.JS.UpdateConsumer(uctx, e.Topo.EventsStream(), cfg)
		return err == nil
	})
	held("after the widening update")
	// The replica's pulls, renewed across the moves, get nothing.
	stayedQuiet(t, 3*time.Second, "an event above the hold reached the vendor", func() bool { return aboveHold() != "" })
	held("3 s on")

	if err := topology.ReleaseWidened(ctx, e.JS, []jetstream.Consumer{updated}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 90*time.Second, "every event delivered", allDelivered(t, e, ids))
	for id, got := range gatewayIDs(t, e) {
		if got != 1 {
			t.Errorf("event %s delivered %d times", id, got)
		}
	}
	if info := consumer(); info.Paused {
		t.Errorf("the consumer is still paused after its release")
	}
	if lost > 0 {
		t.Logf("%d events the server sent into a pull the replica had ended were pending through the hold, delivered after the release", lost)
	}
}

// settledAtHold waits until what the replica had in hand when the
// consumer was held is delivered and its acks are at the server, and
// returns how many events the server still counts pending then.
//
// Not NumAckPending == 0: the server may count pending an event the
// replica never got. A saturated sink ends its pull every quarter of
// ack_wait (consume.go, feed) and pulls anew; on a cluster the consumer's
// leader, often on another server than the replica's, may send a message
// into the old pull after the replica unsubscribed its inbox (it chose the
// pull request while the interest was there, then waits for the delivery's
// replication before sending, and the interest's removal travels to it
// over a route). That message is dropped, or queued for redelivery if the
// leader sees the interest gone; either way it stays pending, and a paused
// consumer redelivers nothing, so it stays pending until the release and
// is delivered then, once (checked at the end). Diagnostic runs on a
// loaded machine saw it after up to 4 in 10 of the pulls ended that way:
// the old pull's last message stream sequence N, the new pull's first
// N+2, and N+1 reaching the replica only as a redelivery, at once (the
// leader saw no interest) or ack_wait later (dropped on the way).
//
// So: nothing sending, every event at or below the hold that the server
// counts pending is one the vendor has not had (every event the vendor
// got is acked at the server), and that lasts for ack_wait with no new
// request: the replica's workers are free, and what it still held would
// reach the vendor within that.
func settledAtHold(t *testing.T, e *testenv.Env, replica *testenv.Dispatcher, ids []string, seq map[string]uint64, at uint64, consumer func() *jetstream.ConsumerInfo) (pending int) {
	t.Helper()
	const quiet = 3 * time.Second // the sink's ack_wait
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	settled := func() (int, bool) {
		if !nothingSending(vendor, replica)() {
			return 0, false
		}
		info := consumer()
		got := gatewayIDs(t, e)
		unsent := 0
		for _, id := range ids {
			if s := seq[id]; s > info.AckFloor.Stream && s <= at && got[id] == 0 {
				unsent++
			}
		}
		return info.NumAckPending, info.NumAckPending == unsent
	}
	deadline := time.Now().Add(30 * time.Second)
	var since time.Time // since when it has been settled, the same
	var requests int
	for {
		n, ok := settled()
		r := len(vendor.Requests())
		if !ok {
			since = time.Time{}
		} else if since.IsZero() || r != requests || n != pending {
			since = time.Now()
		}
		requests, pending = r, n
		if ok && time.Since(since) >= quiet {
			return pending
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after 30s waiting for the events in hand at the hold settled (%d pending, settled %v)", n, ok)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// publishAt is publishWithRetry, returning the event's stream sequence.
func publishAt(t *testing.T, js jetstream.JetStream, subject, id string, raw []byte) uint64 {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		ack, err := js.Publish(ctx, subject, raw, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			return ack.Sequence
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish %s: %v", id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// leaderOf waits for a replicated group (a stream, a consumer) to have a
// leader, and names its server.
func leaderOf(t *testing.T, cluster func(context.Context) (*jetstream.ClusterInfo, error)) string {
	t.Helper()
	var leader string
	testenv.Eventually(t, 30*time.Second, "a leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		cl, err := cluster(ctx)
		if err != nil || cl == nil {
			return false
		}
		leader = cl.Leader
		return leader != ""
	})
	return leader
}

// restartServerNamed restarts the cluster's server of that name.
func restartServerNamed(t *testing.T, e *testenv.Env, name string) {
	t.Helper()
	for i, s := range e.Servers {
		if s.Name() == name {
			e.RestartServer(i)
			return
		}
	}
	t.Fatalf("no server is named %q", name)
}

// stepDown asks a group's leader to step down through the JetStream API,
// retrying while the cluster elects.
func stepDown(t *testing.T, e *testenv.Env, api string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		msg, err := e.NC.Request(api, nil, 2*time.Second)
		if err == nil && strings.Contains(string(msg.Data), `"success":true`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v %s", api, err, msgData(msg))
		}
		time.Sleep(200 * time.Millisecond)
	}
}
