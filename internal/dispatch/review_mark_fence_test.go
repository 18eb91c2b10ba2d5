package dispatch_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// Review (issue 19): `sinks remove` marks a sink's consumers with a
// read-modify-write of their config. A replica binding the sink between
// the read and the write (TestReviewMarkRemovingDoesNotRestoreAStaleFence:
// 46 of 100 racing binds) is left with consumers carrying the mark and
// the fence read before its bind; the removal then gives up (it sees the
// replica's presence record), and the replica, fenced by a config no
// replica runs, pulls nothing: the sink is wedged until a restart. Here
// the race's outcome is written directly.
func TestReviewReplicaRunningAMarkedSinkIsNotFencedByTheMarksStaleFence(t *testing.T) {
	t.Parallel() // waits on the fence's reads, not the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	e.Start([]config.Sink{sink}, routes)
	first := publishTracks(t, e, 3, "order_paid")
	testenv.Eventually(t, 10*time.Second, "the first events delivered", allDelivered(t, e, first))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.CachedInfo().Config
	cfg.Metadata = maps.Clone(cfg.Metadata)
	cfg.Metadata[topology.FenceMetadata] = "fence-of-a-config-gone"
	cfg.Metadata[topology.RemovingMetadata] = time.Now().UTC().Format(time.RFC3339)
	if _, err := e.JS.UpdateConsumer(ctx, e.Topo.EventsStream(), cfg); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second) // the fence is read every second at most
	after := publishTracks(t, e, 5, "order_paid")
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) && !allDelivered(t, e, after)() {
		time.Sleep(200 * time.Millisecond)
	}
	got := gatewayIDs(t, e)
	n := 0
	for _, id := range after {
		n += min(got[id], 1)
	}
	t.Logf("%d of %d events delivered by the replica running the marked sink", n, len(after))
	if n != len(after) {
		t.Errorf("%d of %d events delivered in 15 s: the replica running the sink is fenced by the stale fence the mark wrote", n, len(after))
	}
}
