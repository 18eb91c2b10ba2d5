package dispatch_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Review (issue 19): a replica whose healer never saw its consumer gone
// (fenced, it pulls nothing; another replica healed the consumer between
// two of its rounds) keeps writing floors naming the stream instance it
// bound. After the events stream was deleted and made again, such a
// replica's floor is taken at the next start for another stream's
// (Floor.StreamCreated), and a consumer lost while no dispatcher runs is
// recreated from the new stream's first event: every event of it
// delivered again.
func TestReviewStaleReplicaDoesNotRecordAFloorOfAStreamGone(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	older := []config.Route{{Sinks: []string{"gateway"}}}
	newer := []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}}
	fenced := e.Start([]config.Sink{sink}, older)
	owner := e.Start([]config.Sink{sink}, newer) // started last: owns the sink
	first := publishTracks(t, e, 3, "order_paid")
	testenv.Eventually(t, 10*time.Second, "the first events delivered", allDelivered(t, e, first))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := e.JS.DeleteStream(ctx, e.Topo.EventsStream()); err != nil {
		t.Fatal(err)
	}
	if err := e.Topo.Ensure(ctx, e.JS); err != nil {
		t.Fatal(err)
	}
	st, err := e.JS.Stream(ctx, e.Topo.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	created := st.CachedInfo().Created
	again := publishTracks(t, e, 8, "order_paid")
	testenv.Eventually(t, 20*time.Second, "the new stream's events delivered", allDelivered(t, e, again))
	if err := owner.Stop(); err != nil {
		t.Fatal(err)
	}
	kv, err := e.JS.KeyValue(ctx, e.Topo.FloorsBucket())
	if err != nil {
		t.Fatal(err)
	}
	key := topology.FloorKey("gateway", e.Topo.EventsStream())
	var f topology.Floor
	stale := false
	for deadline := time.Now().Add(12 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		ent, err := kv.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(ent.Value(), &f); err != nil {
			t.Fatal(err)
		}
		if stale = !f.StreamCreated.Equal(created); stale && f.AckFloor == 8 {
			break
		}
	}
	t.Logf("floor record: %d of the stream created %s (the live one: %s); stale=%v", f.AckFloor, f.StreamCreated, created, stale)
	fenced.Kill()
	deleteConsumers(t, e, topology.SinkConsumer("gateway"))
	e.Start([]config.Sink{sink}, newer)
	more := publishTracks(t, e, 2, "order_paid")
	testenv.Eventually(t, 20*time.Second, "events after the restart delivered", allDelivered(t, e, more))
	time.Sleep(2 * time.Second)
	got := gatewayIDs(t, e)
	dups := 0
	for _, id := range again {
		dups += got[id] - 1
	}
	t.Logf("%d of %d events of the new stream delivered again after the loss while down", dups, len(again))
	if stale || dups > 0 {
		t.Errorf("floor recorded against a stream instance gone (stale=%v); %d of %d events delivered again", stale, dups, len(again))
	}
}
