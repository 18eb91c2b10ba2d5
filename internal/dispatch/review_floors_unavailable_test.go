package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// Review (issue 19): the floors bucket is in bind's path (EnsureFloors and
// a WriteFloor per consumer bound), unlike the presence and pause records.
// A floors bucket that refuses writes (here: its stream sealed; in a
// cluster, a bucket whose R3 group lost quorum while the events streams
// kept theirs) keeps every restarting dispatcher from binding any sink,
// though every consumer exists and nothing is missing: the deployment
// delivers nothing until the bucket is back.
func TestReviewFloorsBucketRefusingWritesBlocksEveryStart(t *testing.T) {
	t.Parallel() // waits on the server, not on the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	d := e.Start([]config.Sink{sink}, routes)
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := e.JS.Stream(ctx, "KV_"+e.Topo.FloorsBucket())
	if err != nil {
		t.Fatal(err)
	}
	cfg := st.CachedInfo().Config
	cfg.Sealed = true
	if _, err := e.JS.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	ids := publishTracks(t, e, 5, "order_paid")
	if _, err = e.TryStart([]config.Sink{sink}, routes); err != nil {
		t.Fatalf("a dispatcher whose sinks' consumers all exist did not start while the floors bucket refused writes: %v", err)
	}
	testenv.Eventually(t, 15*time.Second, "the events delivered with the floors bucket refusing writes", allDelivered(t, e, ids))
}
