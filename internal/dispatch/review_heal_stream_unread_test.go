package dispatch_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// The events stream deleted and made again under a running dispatcher:
// its healer recreates the sink's consumer from the new stream's first
// event, having read the stream's creation. That read failing (a slow or
// leaderless stream) once let the recreation go on at the old floor, a
// position in the deleted stream: every event of the new one below it was
// skipped. A healer that cannot read the stream now waits to.
func TestHealerThatCannotReadTheStreamDoesNotRecreateAtTheOldFloor(t *testing.T) {
	t.Parallel() // waits on the healer's rounds and deadlines, not the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	_, js := e.Connect()
	var hold atomic.Bool
	var stalled atomic.Int32
	sj := &slowJS{JetStream: js}
	sj.slow = func(op, stream, _ string) time.Duration {
		if op == "stream" && stream == e.Topo.EventsStream() && hold.Load() {
			stalled.Add(1)
			return time.Minute // past the healer's deadline
		}
		return 0
	}
	startOn(t, e, sj, []config.Sink{sink}, routes, nil)
	first := publishTracks(t, e, 12, "order_paid")
	testenv.Eventually(t, 15*time.Second, "the first events delivered", allDelivered(t, e, first))
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	kv, err := e.JS.KeyValue(ctx, e.Topo.FloorsBucket())
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the healer's floor at the first events' end", func() bool {
		f, found, err := topology.ReadFloor(ctx, kv, "gateway", e.Topo.EventsStream())
		return err == nil && found && f.AckFloor == 12
	})
	hold.Store(true)
	if err := e.JS.DeleteStream(ctx, e.Topo.EventsStream()); err != nil {
		t.Fatal(err)
	}
	if err := e.Topo.Ensure(ctx, e.JS); err != nil {
		t.Fatal(err)
	}
	// Fewer than the old floor (12): at it, all of them would be skipped.
	again := publishTracks(t, e, 5, "order_paid")
	// The healer finds the consumer gone, and its read of the stream
	// times out: it recreated the consumer at once (at 13), or it reads
	// the stream again.
	testenv.Eventually(t, 30*time.Second, "the consumer recreated, or the stream read again", func() bool {
		_, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
		return err == nil || stalled.Load() >= 2
	})
	hold.Store(false)
	testenv.Eventually(t, 45*time.Second, "the new stream's events delivered", allDelivered(t, e, again))
}
