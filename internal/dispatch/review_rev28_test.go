package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// recreateEventsConsumer deletes the events stream, makes it again (as a
// dispatcher's start does) and recreates the sink's consumer in it from
// its first event, as another replica's healer does (heal: at 1 in a
// stream made again): all at once, before this replica's healer looks.
func recreateEventsConsumer(t *testing.T, e *testenv.Env, sink string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, name := e.Topo.EventsStream(), topology.SinkConsumer(sink)
	c, err := e.JS.Consumer(ctx, stream, name)
	if err != nil {
		t.Fatal(err)
	}
	cfg := c.CachedInfo().Config
	if err := e.JS.DeleteStream(ctx, stream); err != nil {
		t.Fatal(err)
	}
	if err := e.Topo.Ensure(ctx, e.JS); err != nil {
		t.Fatal(err)
	}
	cfg.Metadata[topology.StartMetadata] = "1"
	deadline := time.Now().Add(20 * time.Second)
	for {
		_, _, err := topology.RecreateConsumer(ctx, e.JS, stream, cfg, 1)
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond) // RecreateConsumer's own "try again" (its directory check)
	}
}

// ba0de84 lets go, unsettled, of what a replica holds from a deleted
// events stream, but only when this replica's healer sees the loss itself
// (the stream not found at a look, or found made again when it recreates
// the consumer). A consumer found already recreated in the stream made
// again, by another replica's healer or bind, is a look that succeeds
// (check: err == nil; rebase even logs "recreated in the events stream
// made again by another dispatcher"), and nothing is orphaned: a message
// of the deleted stream still in this replica's hands is acked when its
// request ends, and the server takes the ack for the new stream's event
// at the same sequence, pending here. A replica finds it so whenever it
// had no pull open when the stream went (its workers busy, as here; its
// gate shut by a breaker or a Retry-After) and another replica, or an
// operator's restart of one, made the stream and the consumer again first.
func TestReviewRev28AConsumerFoundRecreatedByAnotherReplicaOrphansNothing(t *testing.T) {
	t.Parallel() // waits on the healer's rounds, not on the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Timeout = time.Minute
	sink.Concurrency = 1 // the worker busy with old1, the pull stalls behind it
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	h := newHolding()
	wrap := func(_ string, s sinks.Sink) sinks.Sink { h.Sink = s; return h }
	opts := func(c *config.Dispatcher) { c.AckWait = 60 * time.Second; c.ShutdownGrace = 500 * time.Millisecond }
	d := e.StartWrapped([]config.Sink{sink}, routes, wrap, opts)

	old1 := testenv.Track(t, "order_paid", "user-old1")
	old2 := testenv.Track(t, "order_paid", "user-old2")
	h.hold(old1.ID)
	h.hold(old2.ID)
	e.Publish(old1)
	if ack := e.Publish(old2); ack.Sequence != 2 {
		t.Fatalf("old2 at %d, want 2", ack.Sequence)
	}
	old1Gate, old1Started, old1Done := h.chans(old1.ID)
	old2Gate, old2Started, old2Done := h.chans(old2.ID)
	waitClosed(t, old1Started, 15*time.Second, "old1's request started")

	recreateEventsConsumer(t, e, "gateway")
	fresh1 := testenv.Track(t, "order_paid", "user-new1")
	fresh2 := testenv.Track(t, "order_paid", "user-new2")
	h.hold(fresh2.ID)
	e.Publish(fresh1)
	if ack := e.Publish(fresh2); ack.Sequence != 2 {
		t.Fatalf("fresh2 at %d, want 2", ack.Sequence)
	}
	fresh2Gate, fresh2Started, _ := h.chans(fresh2.ID)

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	// old1 ends (its ack names sequence 1, not yet delivered in the new
	// stream: ignored); old2 goes to the worker, and the pull then takes
	// the new stream's events, which wait behind it.
	close(old1Gate)
	waitClosed(t, old1Done, 15*time.Second, "old1's request ended")
	waitClosed(t, old2Started, 15*time.Second, "old2's request started")
	testenv.Eventually(t, 30*time.Second, "the new stream's events delivered to the replica", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.Delivered.Stream >= 2
	})
	// old2 ends: its ack names sequence 2.
	close(old2Gate)
	waitClosed(t, old2Done, 15*time.Second, "old2's request ended")
	waitClosed(t, fresh2Started, 30*time.Second, "fresh2's request started")
	testenv.Eventually(t, 10*time.Second, "fresh1 delivered", func() bool { return gatewayIDs(t, e)[fresh1.ID] > 0 })
	if err := d.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	settled := info.AckFloor.Stream >= 2 || info.NumAckPending == 0
	if settled {
		t.Errorf("the new stream's event 2 is settled at the server (ack floor %d, %d ack pending) while its request is still under way: "+
			"old2's ack, from the deleted stream, was taken for it (the consumer was found recreated, and nothing orphaned)",
			info.AckFloor.Stream, info.NumAckPending)
	}

	// Its attempt cut short by the stop: handed back, for the next start.
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	close(fresh2Gate)
	e.Start([]config.Sink{sink}, routes)
	delivered := func() bool { return gatewayIDs(t, e)[fresh2.ID] > 0 }
	deadline := time.Now().Add(20 * time.Second)
	for !delivered() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polls a condition, as testenv.Eventually
	}
	if !delivered() {
		t.Fatalf("the new stream's event 2 was never delivered: old2's ack, from the deleted stream, settled it")
	}
}

// ba0de84 orphans what the keeper holds when the healer sees the stream
// gone (and again when it finds it made again), but a message of the
// deleted stream can still be waiting in the pull's own buffer, out of
// the keeper's reach: a pull stalled behind busy workers (feed's wait for
// a worker, up to a quarter of ack_wait) is not reading when the stream
// goes, the healer's round finds the loss first, and only afterwards does
// feed end the pull and take what it had buffered into the keeper's care
// (k.add in feed's drain), unorphaned. Its ack, when its request ends,
// settles the new stream's event at its sequence, pending in this very
// replica, which is then never delivered.
func TestReviewRev28AMessageStillInThePullsBufferIsNotOrphaned(t *testing.T) {
	t.Parallel() // waits on the healer's rounds and a quarter of ack_wait, not on the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Timeout = 2 * time.Minute
	sink.Concurrency = 1 // the worker busy with old1: old2 waits for it in feed, old3 in the pull's buffer
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	h := newHolding()
	wrap := func(_ string, s sinks.Sink) sinks.Sink { h.Sink = s; return h }
	// A quarter of ack_wait (15 s) outlasts a healer round (5 s), its
	// settle (1 s) and the recreation.
	opts := func(c *config.Dispatcher) { c.AckWait = time.Minute; c.ShutdownGrace = 500 * time.Millisecond }
	d := e.StartWrapped([]config.Sink{sink}, routes, wrap, opts)

	old1 := testenv.Track(t, "order_paid", "user-old1")
	old2 := testenv.Track(t, "order_paid", "user-old2")
	old3 := testenv.Track(t, "order_paid", "user-old3")
	h.hold(old1.ID)
	h.hold(old3.ID)
	e.Publish(old1)
	e.Publish(old2)
	if ack := e.Publish(old3); ack.Sequence != 3 {
		t.Fatalf("old3 at %d, want 3", ack.Sequence)
	}
	old1Gate, old1Started, _ := h.chans(old1.ID)
	old3Gate, old3Started, old3Done := h.chans(old3.ID)
	waitClosed(t, old1Started, 15*time.Second, "old1's request started")

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := e.JS.DeleteStream(ctx, e.Topo.EventsStream()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the sink's consumer reported lost (the stream seen gone)", func() bool {
		lost, _ := d.Tally.ConsumersLost("gateway")
		return lost >= 1
	})
	if err := e.Topo.Ensure(ctx, e.JS); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the sink's consumer recreated in the stream made again", func() bool {
		_, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
		return err == nil
	})
	var fresh []string
	for i := range 3 {
		ev := testenv.Track(t, "order_paid", "user-new")
		fresh = append(fresh, ev.ID)
		if i == 2 {
			h.hold(ev.ID)
		}
		e.Publish(ev)
	}
	fresh3Gate, fresh3Started, _ := h.chans(fresh[2])

	// old1 ends; old2 (orphaned) and then old3 (taken from the pull's
	// buffer after the healer orphaned what was held) go to the worker,
	// and the pull takes the new stream's events, which wait behind old3.
	close(old1Gate)
	c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	// Since the fix, a pull that began before the consumer instance was
	// orphaned is handed back and pulled anew (feed): old3 may never be
	// sent at all, which settles nothing. Either way, the new stream's
	// event 3 must be delivered.
	sentOld3 := false
	select {
	case <-old3Started:
		sentOld3 = true
	case <-fresh3Started:
		t.Log("old3, in the pull's buffer, was handed back with its pull, never sent")
		close(old3Gate)
	case <-time.After(time.Minute):
		t.Fatal("neither old3's request nor the new stream's event 3's started in 1m0s")
	}
	if sentOld3 {
		testenv.Eventually(t, 30*time.Second, "the new stream's events delivered to the replica", func() bool {
			info, err := c.Info(ctx)
			return err == nil && info.Delivered.Stream >= 3
		})
		close(old3Gate) // its ack names sequence 3
		waitClosed(t, old3Done, 15*time.Second, "old3's request ended")
		waitClosed(t, fresh3Started, 30*time.Second, "the new stream's event 3's request started")
		if err := d.NC.Flush(); err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.AckFloor.Stream >= 3 || info.NumAckPending == 0 {
			t.Errorf("the new stream's event 3 is settled at the server (ack floor %d, %d ack pending) while its request is still under way: "+
				"old3's ack, from the deleted stream, was taken for it (it was in the pull's buffer when the healer orphaned what was held)",
				info.AckFloor.Stream, info.NumAckPending)
		}

	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	close(fresh3Gate)
	e.Start([]config.Sink{sink}, routes)
	delivered := func() bool { return gatewayIDs(t, e)[fresh[2]] > 0 }
	deadline := time.Now().Add(20 * time.Second)
	for !delivered() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polls a condition, as testenv.Eventually
	}
	if !delivered() {
		t.Fatalf("the new stream's event 3 was never delivered: old3's ack, from the deleted stream, settled it")
	}
}
