package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// The healer recreates a lost consumer with the config it saw when its
// replica bound, fence included. A fenced-off replica (old routes) whose
// healer recreates the consumer therefore writes back its own, stale
// fence: the old config owns the sink again and acks ("skips") what the
// new routes deliver. Here the new replica is down for a moment (a
// restart in the rollout) when the consumer is lost; without the loss the
// track events would wait for it (the fence is still the new config's).
func TestHealerRecreatingAConsumerKeepsTheOwnersFence(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	oldRoutes := []config.Route{{Types: []string{envelope.TypeIdentify}, Sinks: []string{"gateway"}}}
	newRoutes := []config.Route{{Sinks: []string{"gateway"}}}
	old := e.Start([]config.Sink{sink}, oldRoutes)
	nu := e.Start([]config.Sink{sink}, newRoutes)
	testenv.Eventually(t, 10*time.Second, "the old replica fenced off", func() bool { return old.Tally.Fenced("gateway") })
	if err := nu.Stop(); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, name := e.Topo.EventsStream(), topology.SinkConsumer("gateway")
	if err := e.JS.DeleteConsumer(ctx, stream, name); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, "the consumer recreated", func() bool {
		_, err := e.JS.Consumer(ctx, stream, name)
		return err == nil
	})
	c, err := e.JS.Consumer(ctx, stream, name)
	if err != nil {
		t.Fatal(err)
	}
	want := dispatch.Fingerprint("gateway", newRoutes, nil, topology.EventFilter{})
	if got := c.CachedInfo().Config.Metadata[topology.FenceMetadata]; got != want {
		t.Errorf("recreated with fence %q, want the owner's %q (the old config's is %q)", got, want,
			dispatch.Fingerprint("gateway", oldRoutes, nil, topology.EventFilter{}))
	}

	ids := publishTracks(t, e, 20, "order_paid")
	time.Sleep(2 * time.Second)             // the old replica has them, if it owns the sink
	e.Start([]config.Sink{sink}, newRoutes) // the new replica back
	testenv.Eventually(t, 20*time.Second, "the 20 track events delivered", allDelivered(t, e, ids))
}

// The same with filters: the fenced-off replica's healer knows the
// owner's fence but not its filter (the owner's routes), so it must not
// recreate the consumer with its own, narrower one under the owner's
// fence: it reads the whole stream until the owner binds again.
func TestHealerRecreatingAConsumerForAnotherOwnerReadsTheWholeStream(t *testing.T) {
	t.Parallel() // mostly waits out the healer's looks
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := func(types ...string) []config.Route {
		return []config.Route{{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}, {Types: types, Sinks: []string{"gateway"}}}
	}
	old := e.Start([]config.Sink{first, sink}, routes(envelope.TypeIdentify))
	nu := e.Start([]config.Sink{first, sink}, routes(envelope.TypeIdentify, envelope.TypeTrack))
	testenv.Eventually(t, 10*time.Second, "the old replica fenced off", func() bool { return old.Tally.Fenced("gateway") })
	if err := nu.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stream, name := e.Topo.EventsStream(), topology.SinkConsumer("gateway")
	if err := e.JS.DeleteConsumer(ctx, stream, name); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, "the consumer recreated", func() bool {
		_, err := e.JS.Consumer(ctx, stream, name)
		return err == nil
	})
	c, err := e.JS.Consumer(ctx, stream, name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.CachedInfo().Config
	if !topology.Reads(topology.FiltersOf(cfg), e.Topo.EventSubject(envelope.TypeTrack)) {
		t.Errorf("recreated under the owner's fence %s reading %q: not the track events the owner's routes deliver",
			cfg.Metadata[topology.FenceMetadata], topology.FiltersOf(cfg))
	}
	ids := publishTracks(t, e, 20, "order_paid")
	e.Start([]config.Sink{first, sink}, routes(envelope.TypeIdentify, envelope.TypeTrack)) // the new replica back
	testenv.Eventually(t, 20*time.Second, "the 20 track events delivered", allDelivered(t, e, ids))
}
