package dispatch_test

// Review of 5868d74 (a bind try cut short reports a recreation's loss,
// writes a lowered sweep bound again, gives the takeovers and leaders
// their own 10 s). The fix reports a consumer recreated before the try
// failed, but only once restoreLost (LostFromFloor) or ensureEvents
// (LostFromStart) has returned: a try cut between a consumer's creation
// on the server and the step after it, inside those, still leaves the
// consumer in place with no report, and the next try finds it there.

import (
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// RecreateConsumer creates the consumer, then updates it (the check that
// it is stored); if the update fails it deletes the consumer for the
// caller to try again, with the same context. A try whose time runs out
// on that update has no time left for the delete either (nats.go sends
// no request on a context already done): the consumer recreated from
// its floor stays, restoreLost returns only the error, and the next try
// finds the consumer in place. The loss (here two events gone past
// max_age) is never logged or counted. Here the update stalls past the
// try's deadline (cutATry), once.
func TestReviewRev18ATryCutInTheRecreationsCheckStillReportsTheLoss(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e, logs, sink, routes := gatewayStoppedAtThree(t)
	backlog := lostWithTwoGone(t, e)

	_, js := e.Connect()
	var recreated, cut bool
	sj := &slowJS{JetStream: js}
	sj.afterCall = func(op, stream, name string) {
		if op == "create" && name == topology.SinkConsumer("gateway") {
			recreated = true
		}
	}
	sj.slow = func(op, stream, name string) time.Duration {
		if op == "update" && name == topology.SinkConsumer("gateway") && recreated && !cut {
			cut = true
			return cutATry // past the try's deadline
		}
		return 0
	}
	tally, _ := startOn(t, e, sj, []config.Sink{sink}, routes, nil)
	sj.mu.Lock()
	wasCut := cut
	sj.mu.Unlock()
	if !wasCut {
		t.Fatal("the first try was not cut where the test cuts it")
	}
	testenv.Eventually(t, 15*time.Second, "the rest of the backlog delivered", allDelivered(t, e, backlog[2:]))
	if lost, down := tally.ConsumersLost("gateway"); lost != 1 || down != 0 {
		t.Errorf("losses counted %d, not back %d; want 1, 0 (the try was cut in RecreateConsumer's check, after the create)", lost, down)
	}
	if n := logs.FilterMessageSnippet("they cannot be delivered").FilterField(zap.Uint64("unrecoverable_at_most", 2)).Len(); n != 1 {
		t.Errorf("%d log lines saying the 2 events that left the stream cannot be delivered; want 1 (all of them: %v)", n, messages(logs))
	}
}

// A consumer missing with no floor recorded and sinks[].start set is
// created by ensureEvents (LostFromStart), which creates it, then
// records its start with an update; EnsureSink reports it only once
// ensureEvents returned. A try cut on that update leaves the consumer in
// place and unreported; the next try finds it (restoreLost: nil, keep
// records the start) and the loss is never logged or counted. Red until
// the create carries a mark the next try reads (LostUnreportedMetadata).
func TestReviewRev18ATryCutAfterACreationFromStartStillReportsTheLoss(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e, logs, sink, routes := gatewayStoppedAtThree(t)
	stopped := time.Now()
	backlog := publishTracks(t, e, 5, "order_paid")
	deleteConsumers(t, e, topology.SinkConsumer("gateway"))
	deleteFloors(t, e)
	sink.Start = stopped.UTC().Format(time.RFC3339Nano)

	_, js := e.Connect()
	var created, cut bool
	sj := &slowJS{JetStream: js}
	sj.afterCall = func(op, stream, name string) {
		if op == "create" && name == topology.SinkConsumer("gateway") {
			created = true
		}
	}
	sj.slow = func(op, stream, name string) time.Duration {
		if op == "update" && name == topology.SinkConsumer("gateway") && created && !cut {
			cut = true
			return cutATry // past the try's deadline
		}
		return 0
	}
	tally, _ := startOn(t, e, sj, []config.Sink{sink}, routes, nil)
	sj.mu.Lock()
	wasCut := cut
	sj.mu.Unlock()
	if !wasCut {
		t.Fatal("the first try was not cut where the test cuts it")
	}
	testenv.Eventually(t, 15*time.Second, "the backlog delivered", allDelivered(t, e, backlog))
	if lost, down := tally.ConsumersLost("gateway"); lost != 1 || down != 0 {
		t.Errorf("losses counted %d, not back %d; want 1, 0 (the try was cut in ensureEvents, after the create)", lost, down)
	}
	if n := logs.FilterMessageSnippet("created from sinks[].start").Len(); n != 1 {
		t.Errorf("%d log lines saying the consumer was created from sinks[].start; want 1 (all of them: %v)", n, messages(logs))
	}
}
