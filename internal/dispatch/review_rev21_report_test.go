package dispatch_test

// Review of 008fbfc..b0fead3 (rev21): the lost_unreported mark carrying
// a recreation's loss, Lost reported from inside EnsureSink, the stream
// read after each events consumer.

import (
	"context"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// calledFrom says whether fn (a function's full name's suffix) is on the
// caller's stack: the wrappers below act at one request of one step.
func calledFrom(fn string) bool {
	pcs := make([]uintptr, 64)
	n := runtime.Callers(2, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		if strings.HasSuffix(f.Function, fn) {
			return true
		}
		if !more {
			return false
		}
	}
}

// landedInNextTryJS holds the first create of durable from a recorded
// floor (RecreateConsumer's, by start sequence) until the try's deadline
// and fails it, as a proposal the cluster has not applied yet; the
// cluster applies it while the next try's restoreLost is reading the
// stream (after its look found no consumer, before RecreateConsumer's).
type landedInNextTryJS struct {
	jetstream.JetStream
	durable, stream string
	mu              sync.Mutex
	held            *jetstream.ConsumerConfig
	landed          bool
}

func (j *landedInNextTryJS) CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	j.mu.Lock()
	hold := cfg.Durable == j.durable && cfg.DeliverPolicy == jetstream.DeliverByStartSequencePolicy && j.held == nil
	if hold {
		cp := cfg
		j.held = &cp
	}
	j.mu.Unlock()
	if !hold {
		return j.JetStream.CreateConsumer(ctx, stream, cfg)
	}
	<-ctx.Done() // not applied yet when the try gives up
	return nil, ctx.Err()
}

func (j *landedInNextTryJS) Stream(ctx context.Context, stream string) (jetstream.Stream, error) {
	j.mu.Lock()
	land := stream == j.stream && j.held != nil && !j.landed && calledFrom("topology.restoreLost")
	if land {
		j.landed = true
	}
	held := j.held
	j.mu.Unlock()
	if land {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := j.JetStream.CreateConsumer(cctx, stream, *held)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	return j.JetStream.Stream(ctx, stream)
}

// A recreation from the floor whose create the cluster applies late:
// after the try gave up on it, and after the next try's restoreLost
// looked (not found) but before RecreateConsumer's own look. That look
// finds it, created is false, and restoreLost returns nil ("another
// dispatcher made it first ... no loss of ours"): nothing is reported
// (Lost is not called), and keep, without report, leaves the mark on the
// server. The consumer that was made from this dispatcher's own create,
// carrying its own loss in lost_unreported, is bound with the loss
// neither logged nor counted: the two events gone past max_age go
// unsaid until some later start reads the mark (if the consumer survives
// till then; a loss meanwhile has the healer recreate it from a config
// whose mark seen strips, and the loss is never said).
func TestReviewRev21ARecreationLandingWithinTheNextTryStillReportsTheLoss(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e, logs, sink, routes := gatewayStoppedAtThree(t)
	backlog := lostWithTwoGone(t, e)

	_, js := e.Connect()
	lj := &landedInNextTryJS{JetStream: js, durable: topology.SinkConsumer("gateway"), stream: e.Topo.EventsStream()}
	tally, _ := startOn(t, e, lj, []config.Sink{sink}, routes, nil)
	lj.mu.Lock()
	landed := lj.landed
	lj.mu.Unlock()
	if !landed {
		t.Fatal("the recreation was not landed where the test lands it")
	}
	testenv.Eventually(t, 15*time.Second, "the rest of the backlog delivered", allDelivered(t, e, backlog[2:]))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	_, marked := c.CachedInfo().Config.Metadata[topology.LostUnreportedMetadata]
	lost, down := tally.ConsumersLost("gateway")
	if lost != 1 || down != 0 {
		t.Errorf("losses counted %d, not back %d; want 1, 0 (this dispatcher's own recreation, applied late; the mark still on the server: %v)",
			lost, down, marked)
	}
	if n := logs.FilterMessageSnippet("they cannot be delivered").FilterField(zap.Uint64("unrecoverable_at_most", 2)).Len(); n != 1 {
		t.Errorf("%d log lines saying the 2 events that left the stream cannot be delivered; want 1 (all of them: %v)", n, messages(logs))
	}
}

// deletedBetweenLooksJS deletes durable right after restoreLost's look
// found it (an operator's `nats consumer rm`, an R1 consumer lost with
// its server), before ensureEvents' look.
type deletedBetweenLooksJS struct {
	jetstream.JetStream
	durable string
	mu      sync.Mutex
	deleted bool
}

func (j *deletedBetweenLooksJS) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	c, err := j.JetStream.Consumer(ctx, stream, name)
	j.mu.Lock()
	del := err == nil && name == j.durable && !j.deleted && calledFrom("topology.restoreLost")
	if del {
		j.deleted = true
	}
	j.mu.Unlock()
	if del {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		derr := j.JetStream.DeleteConsumer(dctx, stream, name)
		cancel()
		if derr != nil {
			return nil, derr
		}
	}
	return c, err
}

// restoreLost looks once (found: nothing to restore), and ensureEvents
// looks again: a consumer gone between the two looks is created as a
// new sink's is, from new events (DeliverNewPolicy), with no loss said.
// The sink is not new (its retries consumer and floor exist): its
// backlog, published while no dispatcher ran, is skipped without a word.
// The window is one round trip; not from this change (008fbfc has the
// same two looks), but b0fead3 now has restoreLost's look decide what
// is reported too. Red: the backlog is never delivered.
func TestReviewRev21AConsumerGoneBetweenBindsTwoLooksIsNotMadeFromNewEvents(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e, _, sink, routes := gatewayStoppedAtThree(t)
	backlog := publishTracks(t, e, 4, "order_paid")
	_, js := e.Connect()
	dj := &deletedBetweenLooksJS{JetStream: js, durable: topology.SinkConsumer("gateway")}
	startOn(t, e, dj, []config.Sink{sink}, routes, nil)
	dj.mu.Lock()
	deleted := dj.deleted
	dj.mu.Unlock()
	if !deleted {
		t.Fatal("the consumer was not deleted where the test deletes it")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway")); err == nil {
		info := c.CachedInfo()
		t.Logf("bound consumer: deliver policy %v, start %q, created_with %q", info.Config.DeliverPolicy,
			info.Config.Metadata[topology.StartMetadata], info.Config.Metadata[topology.CreatedWithMetadata])
	}
	testenv.Eventually(t, 20*time.Second, "the backlog published while no dispatcher ran delivered", allDelivered(t, e, backlog))
}

// Lost is called for a recreation from the floor as soon as restoreLost
// returns it; keep's update clearing the mark lands but answers after
// the try's deadline. The next try finds the consumer unmarked and says
// nothing: one report. (Checks bind's dedupe by the consumer's creation
// too: had the update not landed, the next try's unreported would carry
// the creation the server reports, which must equal the one the
// recreation's answer carried.)
func TestReviewRev21AFloorRecreationWhoseClearingLandsLateIsReportedOnce(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e, logs, sink, routes := gatewayStoppedAtThree(t)
	backlog := lostWithTwoGone(t, e)
	_, js := e.Connect()
	lj := &landedUpdateJS{JetStream: js, durable: topology.SinkConsumer("gateway")}
	tally, _ := startOn(t, e, lj, []config.Sink{sink}, routes, nil)
	lj.mu.Lock()
	landed := lj.landed
	lj.mu.Unlock()
	if !landed {
		t.Fatal("the clearing update was not landed where the test lands it")
	}
	testenv.Eventually(t, 15*time.Second, "the rest of the backlog delivered", allDelivered(t, e, backlog[2:]))
	if lost, down := tally.ConsumersLost("gateway"); lost != 1 || down != 0 {
		t.Errorf("losses counted %d, not back %d; want 1, 0", lost, down)
	}
	if n := logs.FilterMessageSnippet("they cannot be delivered").Len(); n != 1 {
		t.Errorf("%d log lines saying events cannot be delivered; want 1 (all of them: %v)", n, messages(logs))
	}
}

// noClearJS never lets keep's update that clears lost_unreported land
// until the try's deadline, and never applies it (a meta leader that
// drops it): each try finds the consumer still marked, and bind's dedupe
// (sink, stream, creation) is all that keeps the loss reported once.
type noClearJS struct {
	jetstream.JetStream
	durable string
	mu      sync.Mutex
	cut     int
}

func (j *noClearJS) UpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	j.mu.Lock()
	hold := cfg.Durable == j.durable && j.cut < 2 && calledFrom("topology.keep")
	if hold {
		j.cut++
	}
	j.mu.Unlock()
	if !hold {
		return j.JetStream.UpdateConsumer(ctx, stream, cfg)
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// Two tries cut at keep's clearing update: the recreation's report (its
// Instance from RecreateConsumer's answer) and the next tries' reports
// from the mark (Instance from a read) must dedupe to one.
func TestReviewRev21AFloorRecreationMarkedThroughTwoCutTriesIsReportedOnce(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e, logs, sink, routes := gatewayStoppedAtThree(t)
	backlog := lostWithTwoGone(t, e)
	_, js := e.Connect()
	nj := &noClearJS{JetStream: js, durable: topology.SinkConsumer("gateway")}
	tally, _ := startOn(t, e, nj, []config.Sink{sink}, routes, nil)
	nj.mu.Lock()
	cut := nj.cut
	nj.mu.Unlock()
	if cut != 2 {
		t.Fatalf("%d tries cut at keep's update; want 2", cut)
	}
	testenv.Eventually(t, 15*time.Second, "the rest of the backlog delivered", allDelivered(t, e, backlog[2:]))
	if lost, down := tally.ConsumersLost("gateway"); lost != 1 || down != 0 {
		t.Errorf("losses counted %d, not back %d; want 1, 0", lost, down)
	}
	if n := logs.FilterMessageSnippet("they cannot be delivered").Len(); n != 1 {
		t.Errorf("%d log lines saying events cannot be delivered; want 1 (all of them: %v)", n, messages(logs))
	}
}
