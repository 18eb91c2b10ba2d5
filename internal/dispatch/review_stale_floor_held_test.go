package dispatch_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// TestReviewStaleReplicaDoesNotRecordAFloorOfAStreamGone, made to happen:
// the fenced replica's healer does not see its consumer gone (its looks
// time out) until the owner has recreated it in the events stream made
// again. It then finds a consumer, and writes its floors against the
// stream instance it bound: a floor the next start takes for a position
// in the new stream. Seen once under load in a -count=5 run (stop 34);
// red until a consumer instance not seen before has its stream instance
// read before its floor is written (healer.rebase).
func TestReviewStaleFloorWhenTheOwnerHealsFirst(t *testing.T) {
	t.Parallel() // waits on healers' rounds (5 s), not the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	older := []config.Route{{Sinks: []string{"gateway"}}}
	newer := []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}}
	_, js := e.Connect()
	var hold atomic.Bool
	sj := &slowJS{JetStream: js}
	name := topology.SinkConsumer("gateway")
	sj.slow = func(op, stream, consumer string) time.Duration {
		if op == "consumer" && consumer == name && stream == e.Topo.EventsStream() && hold.Load() {
			return time.Minute // past the healer's deadline: a look that fails, not one that finds it gone
		}
		return 0
	}
	startOn(t, e, sj, []config.Sink{sink}, older, nil) // fenced once the owner starts
	owner := e.Start([]config.Sink{sink}, newer)
	first := publishTracks(t, e, 3, "order_paid")
	testenv.Eventually(t, 10*time.Second, "the first events delivered", allDelivered(t, e, first))

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	hold.Store(true)
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
	testenv.Eventually(t, 30*time.Second, "the new stream's events delivered by the owner", allDelivered(t, e, again))
	kv, err := e.JS.KeyValue(ctx, e.Topo.FloorsBucket())
	if err != nil {
		t.Fatal(err)
	}
	key := topology.FloorKey("gateway", e.Topo.EventsStream())
	readFloor := func() topology.Floor {
		ent, err := kv.Get(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		var f topology.Floor
		if err := json.Unmarshal(ent.Value(), &f); err != nil {
			t.Fatal(err)
		}
		return f
	}
	testenv.Eventually(t, 20*time.Second, "the owner's floor of the new stream recorded", func() bool {
		f := readFloor()
		return f.StreamCreated.Equal(created) && f.AckFloor == 8
	})
	if err := owner.Stop(); err != nil {
		t.Fatal(err)
	}
	// The fenced replica's healer looks again, and finds the consumer.
	hold.Store(false)
	deadline := time.Now().Add(3 * 5 * time.Second) // three healer rounds
	for time.Now().Before(deadline) {
		if f := readFloor(); !f.StreamCreated.Equal(created) {
			t.Fatalf("floor recorded against the stream instance deleted (created %s; the live one %s): %+v", f.StreamCreated, created, f)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
