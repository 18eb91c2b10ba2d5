package dispatch_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// Two dispatchers on a three-node cluster with R3 streams; mid-load one
// NATS node and one dispatcher die. Every event is delivered.
func TestClusterLosesNothingWhenANodeAndADispatcherDie(t *testing.T) {
	t.Parallel() // waits on elections after the node's death, not the CPU; asserts nothing lost, not a time
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	e := testenv.NewCluster(t, 3)
	for _, name := range []string{e.Topo.EventsStream(), e.Topo.RetriesStream(), e.Topo.DeadLetterStream()} {
		s, err := e.JS.Stream(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		if info, _ := s.Info(context.Background()); info.Config.Replicas != 3 {
			t.Fatalf("stream %s has %d replicas", name, info.Config.Replicas)
		}
	}
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 8
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	e.Emu.Vendor(emulator.MetrixGateway).SetFault(emulator.Fault{Status: 200, Latency: 5 * time.Millisecond})
	a := e.Start([]config.Sink{sink}, routes, func(c *config.Dispatcher) { c.AckWait = 3 * time.Second })
	b := e.Start([]config.Sink{sink}, routes, func(c *config.Dispatcher) { c.AckWait = 3 * time.Second })

	const n = 300
	ids := make([]string, n)
	for i := range n {
		if i == n/3 {
			e.Servers[2].Shutdown() // a NATS node dies
			a.Kill()                // and a dispatcher
		}
		env := testenv.Track(t, "order_paid", fmt.Sprintf("u%d", i))
		ids[i] = env.ID
		raw, _ := env.Marshal()
		publishWithRetry(t, e.JS, e.Topo.EventSubject(env.Type), env.ID, raw)
	}
	testenv.Eventually(t, 90*time.Second, "every event delivered", allDelivered(t, e, ids))
	if a.Tally.DeliveredTo("gateway") == 0 || b.Tally.DeliveredTo("gateway") == 0 {
		t.Errorf("work not shared: a %d, b %d", a.Tally.DeliveredTo("gateway"), b.Tally.DeliveredTo("gateway"))
	}
	t.Logf("delivered by a (killed) %d, by b %d; vendor saw %d ids", a.Tally.DeliveredTo("gateway"), b.Tally.DeliveredTo("gateway"), len(gatewayIDs(t, e)))
}

// publishWithRetry retries as a producer should while the cluster elects
// new leaders: the same message id makes a retry after a lost ack harmless.
func publishWithRetry(t *testing.T, js jetstream.JetStream, subject, id string, raw []byte) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.Publish(ctx, subject, raw, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("publish %s: %v", id, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Issue 9.13: two dispatchers started together with a fresh three-node
// cluster wait for it (not ready meanwhile) instead of exiting, and then
// deliver.
func TestStartsOnAFormingCluster(t *testing.T) {
	t.Parallel() // waits out a forming cluster's timeouts, not on the CPU
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	e := testenv.NewFormingCluster(t, 3)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	started := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := e.TryStart([]config.Sink{sink}, routes)
			started <- err
		}()
	}
	for range 2 {
		if err := <-started; err != nil {
			t.Fatal(err)
		}
	}
	ids := make([]string, 20)
	for i := range ids {
		env := testenv.Track(t, "order_paid", fmt.Sprintf("u%d", i))
		ids[i] = env.ID
		raw, _ := env.Marshal()
		publishWithRetry(t, e.JS, e.Topo.EventSubject(env.Type), env.ID, raw)
	}
	testenv.Eventually(t, 30*time.Second, "every event delivered", allDelivered(t, e, ids))
}

// Issue 19.4: the pin moves while the pinned replica holds a key's head
// on its retries (the vendor answers 503 for it) and the key's next
// events behind it, on a three-node cluster with two replicas: the
// consumer's leader steps down (what topology.SpreadLeaders does at every
// start with partitions), its server restarts, or an operator unpins the
// group. The key's
// newer events, published after the move, go to whoever is pinned next;
// none may reach the vendor before the held ones. Three rounds per case,
// a new key each, the head failing throughout the move and cleared only
// once the newer events are out of the stream and the head has failed
// twice more.
func TestOrderHoldsWhenThePinMovesDuringAHeadsRetries(t *testing.T) {
	t.Parallel() // mostly waiting: on retries' backoffs, elections, hand-overs
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	for _, tc := range []struct {
		name string
		move func(t *testing.T, e *testenv.Env)
	}{
		{"consumer leader steps down", stepDownOrderedConsumer},
		{"operator unpins", unpinOrderedConsumer},
		{"consumer leader's server restarts", restartOrderedConsumerLeader},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // mostly waiting: on retries' backoffs, elections, hand-overs
			e := testenv.NewCluster(t, 3)
			const rounds, held, newer = 3, 3, 3
			var keys []string
			for r := range rounds {
				keys = append(keys, fmt.Sprintf("u%d", r))
			}
			// Each key's events: held ones first (published before the
			// move), then newer ones (after).
			k := newKeyed(t, keys, held+newer)
			sink := orderedSink(e)
			sink.Retry.MaxAttempts = 1000
			sink.Breaker.FailureThreshold = 1000
			withAckWait := func(c *config.Dispatcher) { c.AckWait = 3 * time.Second }
			e.Start([]config.Sink{sink}, gatewayRoute, withAckWait)
			e.Start([]config.Sink{sink}, gatewayRoute, withAckWait)
			vendor := e.Emu.Vendor(emulator.MetrixGateway)
			publish := func(key string, from, to int) {
				for _, env := range k.envs {
					if k.keyOf[env.ID] != key {
						continue
					}
					if i := slices.Index(k.ids[key], env.ID); i >= from && i < to {
						raw, _ := env.Marshal()
						publishWithRetry(t, e.JS, e.Topo.EventSubjectFor(env.Type, env.PartitionKey()), env.ID, raw)
					}
				}
			}
			for _, key := range keys {
				began := time.Now()
				vendor.SetFault(emulator.Fault{Status: 503, Match: k.ids[key][0]})
				failed := vendor.Count(503)
				publish(key, 0, held)
				testenv.Eventually(t, 30*time.Second, key+"'s head retried, its events out of the stream", func() bool {
					return vendor.Count(503) >= failed+2 && orderedPending(t, e) == 0
				})
				movedAt := time.Now()
				tc.move(t, e)
				failed = vendor.Count(503)
				publish(key, held, held+newer)
				testenv.Eventually(t, 60*time.Second, key+"'s newer events out of the stream, its head failing still", func() bool {
					return vendor.Count(503) >= failed+2 && orderedPending(t, e) == 0
				})
				vendor.ClearFault()
				testenv.Eventually(t, 60*time.Second, key+"'s events delivered", func() bool {
					return len(k.atVendor(t, e)[key]) >= held+newer
				})
				t.Logf("%s, %s: the head went untried for %s at most across the move (its backoff is 400 ms at most); round took %s",
					tc.name, key, untried(vendor, k.ids[key][0], movedAt).Round(time.Millisecond), time.Since(began).Round(100*time.Millisecond))
			}
			testenv.Eventually(t, 30*time.Second, "every event delivered", k.delivered(t, e))
			resent := k.checkOrder(t, e, true)
			t.Logf("%d rounds, %d resent (at-least-once)", rounds, resent)
		})
	}
}

// orderedPending is how many of the stream's events the gateway's ordered
// consumer has yet to deliver to a replica (-1 while it cannot be asked).
func orderedPending(t *testing.T, e *testenv.Env) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		return -1
	}
	info, err := c.Info(ctx)
	if err != nil {
		return -1
	}
	return int(info.NumPending)
}

// stepDownOrderedConsumer moves the gateway's ordered consumer's leader
// to another server, as topology.SpreadLeaders does; the new leader has no
// pin.
func stepDownOrderedConsumer(t *testing.T, e *testenv.Env) {
	t.Helper()
	api := "$JS.API.CONSUMER.LEADER.STEPDOWN." + e.Topo.EventsStream() + "." + topology.SinkConsumer("gateway")
	deadline := time.Now().Add(20 * time.Second)
	for {
		msg, err := e.NC.Request(api, nil, 2*time.Second)
		if err == nil && strings.Contains(string(msg.Data), `"success":true`) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("step down the ordered consumer's leader: %v %s", err, msgData(msg))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func msgData(m *nats.Msg) string {
	if m == nil {
		return ""
	}
	return string(m.Data)
}

// unpinOrderedConsumer is an operator's `nats consumer unpin`.
func unpinOrderedConsumer(t *testing.T, e *testenv.Env) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := e.JS.Stream(ctx, e.Topo.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.UnpinConsumer(ctx, topology.SinkConsumer("gateway"), topology.OrderGroup); err != nil {
		t.Fatal(err)
	}
}

// restartOrderedConsumerLeader restarts the server that leads the
// gateway's ordered consumer, as a rolling restart of the cluster does.
func restartOrderedConsumerLeader(t *testing.T, e *testenv.Env) {
	t.Helper()
	var leader string
	testenv.Eventually(t, 20*time.Second, "the ordered consumer's leader", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
		if err != nil {
			return false
		}
		if cl := c.CachedInfo().Cluster; cl != nil {
			leader = cl.Leader
		}
		return leader != ""
	})
	for i, s := range e.Servers {
		if s.Name() == leader {
			e.RestartServer(i)
			return
		}
	}
	t.Fatalf("no server is named %q", leader)
}

// untried is the longest the vendor went without a request for id, from
// the last one before since to the last one of all.
func untried(v *emulator.Vendor, id string, since time.Time) time.Duration {
	var at []time.Time
	for _, r := range v.Requests() {
		if strings.Contains(string(r.Body), id) {
			at = append(at, r.At)
		}
	}
	var gap time.Duration
	for i := 1; i < len(at); i++ {
		if at[i].After(since) {
			gap = max(gap, at[i].Sub(at[i-1]))
		}
	}
	return gap
}
