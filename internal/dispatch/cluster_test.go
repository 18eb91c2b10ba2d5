package dispatch_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// Two dispatchers on a three-node cluster with R3 streams; mid-load one
// NATS node and one dispatcher die. Every event is delivered.
func TestClusterLosesNothingWhenANodeAndADispatcherDie(t *testing.T) {
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
