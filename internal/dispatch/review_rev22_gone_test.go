package dispatch_test

// Review of 9b49881 (rev22): a consumer missing at ensureEvents' look
// after restoreLost found (or made) it fails the try with
// topology.ErrConsumerGone; a consumer RecreateConsumer finds made is
// reported if it carries lost_unreported.
//
// At 9b49881: AConsumerDeletedAtEveryTry… and AConsumerGoneWithout… are
// green (red at b0fead3: the delete made the consumer from new events);
// OneLossTwoReplicasBindingAtOnce… is red (green at b0fead3: the new
// found-made report); OneLossTwoReplicasFirstLook… is red at both. A
// mark naming its maker made both green (40d7ca5) and losses silent
// (review rev23): reverted, the two are skipped as a known limit.

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// goneAtEnsureJS deletes durable just before ensureEvents' look, times
// times (an operator who keeps deleting it, one try after another): the
// first on the consumer the last run left, the next on each recreation
// restoreLost made from the floor in the try before.
type goneAtEnsureJS struct {
	jetstream.JetStream
	durable string
	times   int
	mu      sync.Mutex
	deleted int
}

func (j *goneAtEnsureJS) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	j.mu.Lock()
	del := name == j.durable && j.deleted < j.times && calledFrom("topology.ensureEvents")
	if del {
		j.deleted++
	}
	j.mu.Unlock()
	if del {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err := j.JetStream.DeleteConsumer(dctx, stream, name)
		cancel()
		if err != nil {
			return nil, err
		}
	}
	return j.JetStream.Consumer(ctx, stream, name)
}

// An operator who deletes the consumer at every try's ensureEvents look,
// three tries running: each try recreates it from the floor (restoreLost:
// lostWithTwoGone deleted it), it is deleted again, the try fails with
// ErrConsumerGone; once the deletes stop the bind succeeds, the backlog
// (less the two events gone past max_age) delivered, nothing made from
// new events. Each recreation is a loss of its own (its own instance):
// four reported.
func TestReviewRev22AConsumerDeletedAtEveryTryIsBoundOnceTheDeletesStop(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e, logs, sink, routes := gatewayStoppedAtThree(t)
	backlog := lostWithTwoGone(t, e)
	_, js := e.Connect()
	gj := &goneAtEnsureJS{JetStream: js, durable: topology.SinkConsumer("gateway"), times: 3}
	tally, _ := startOn(t, e, gj, []config.Sink{sink}, routes, nil)
	gj.mu.Lock()
	deleted := gj.deleted
	gj.mu.Unlock()
	if deleted != 3 {
		t.Fatalf("deleted %d times at ensureEvents' look; want 3", deleted)
	}
	testenv.Eventually(t, 20*time.Second, "the rest of the backlog delivered", allDelivered(t, e, backlog[2:]))
	lost, down := tally.ConsumersLost("gateway")
	t.Logf("losses counted %d, not back %d; 'cannot be delivered' lines: %d", lost, down,
		logs.FilterMessageSnippet("they cannot be delivered").Len())
	if lost != 4 || down != 0 {
		t.Errorf("losses counted %d, not back %d; want 4 (one per recreation), 0 (all: %v)", lost, down, messages(logs))
	}
	// Said for what it is, not as the broker not being ready.
	if n := logs.FilterMessageSnippet("consumer was deleted while binding").Len(); n != deleted {
		t.Errorf("%d tries logged as a consumer deleted while binding; want %d (all: %v)", n, deleted, messages(logs))
	}
}

// A consumer deleted between EnsureSink's own look (floors bucket
// unreadable: mayCreate false) and ensureEvents': the try fails with
// ErrConsumerGone, the next finds it missing and waits for the bucket
// (a 503: retryable); once the bucket is back it is recreated from its
// floor, nothing made from new events.
type floorsGoneJS struct {
	floorsDownJS
	durable  string
	deleted  atomic.Bool
	afterDel atomic.Int32 // KeyValue looks of the bucket since the delete
}

func (j *floorsGoneJS) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	if bucket == j.bucket && j.deleted.Load() {
		j.afterDel.Add(1)
	}
	if bucket == j.bucket && j.down.Load() {
		return nil, &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "review: floors bucket without quorum"}
	}
	return j.JetStream.KeyValue(ctx, bucket)
}

func (j *floorsGoneJS) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if cfg.Bucket == j.bucket && j.down.Load() {
		return nil, &jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "review: floors bucket without quorum"}
	}
	return j.JetStream.CreateOrUpdateKeyValue(ctx, cfg)
}

func (j *floorsGoneJS) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	c, err := j.JetStream.Consumer(ctx, stream, name)
	if err == nil && name == j.durable && calledFrom("topology.Topology.EnsureSink") && !calledFrom("topology.ensureEvents") &&
		j.deleted.CompareAndSwap(false, true) {
		dctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		derr := j.JetStream.DeleteConsumer(dctx, stream, name)
		cancel()
		if derr != nil {
			return nil, derr
		}
	}
	return c, err
}

func TestReviewRev22AConsumerGoneWithoutTheFloorsBucketWaitsForIt(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e, _, sink, routes := gatewayStoppedAtThree(t)
	backlog := publishTracks(t, e, 4, "order_paid")
	_, js := e.Connect()
	fj := &floorsGoneJS{floorsDownJS: floorsDownJS{JetStream: js, bucket: e.Topo.FloorsBucket()}, durable: topology.SinkConsumer("gateway")}
	fj.down.Store(true)
	go func() {
		// Two tries after the delete, the bucket comes back.
		deadline := time.Now().Add(60 * time.Second)
		for fj.afterDel.Load() < 2 && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		fj.down.Store(false)
	}()
	startOn(t, e, fj, []config.Sink{sink}, routes, nil)
	if !fj.deleted.Load() {
		t.Fatal("the consumer was not deleted where the test deletes it")
	}
	if n := fj.afterDel.Load(); n < 2 {
		t.Errorf("bound after %d looks of the bucket since the delete; want it to wait for the bucket", n)
	}
	testenv.Eventually(t, 20*time.Second, "the backlog published while no dispatcher ran delivered", allDelivered(t, e, backlog))
}

// twoReplicasJS orders two replicas' binds after a loss: A recreates the
// consumer from the floor (marked lost_unreported) and reports it; its
// keep's clearing update waits until B's RecreateConsumer has found A's
// consumer made (B's restoreLost looked before A's create: its read of
// the stream waits for it).
type twoReplicasJS struct {
	jetstream.JetStream
	role    string // "a" or "b"
	durable string
	// topLook: B's first look (restoreLost's own) comes after A's create,
	// not RecreateConsumer's.
	topLook bool
	shared  *replicaOrder
}

type replicaOrder struct {
	bLooked, aCreated, bFound chan struct{}
	once0, once1, once2       sync.Once
}

func (j *twoReplicasJS) CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if j.role == "a" && cfg.Durable == j.durable && calledFrom("topology.RecreateConsumer") {
		select {
		case <-j.shared.bLooked:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c, err := j.JetStream.CreateConsumer(ctx, stream, cfg)
	if j.role == "a" && err == nil && cfg.Durable == j.durable && calledFrom("topology.RecreateConsumer") {
		j.shared.once1.Do(func() { close(j.shared.aCreated) })
	}
	return c, err
}

func (j *twoReplicasJS) Stream(ctx context.Context, stream string) (jetstream.Stream, error) {
	if j.role == "b" && !j.topLook && calledFrom("topology.restoreLost") {
		j.shared.once0.Do(func() { close(j.shared.bLooked) })
		select {
		case <-j.shared.aCreated:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return j.JetStream.Stream(ctx, stream)
}

func (j *twoReplicasJS) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	if j.role == "b" && j.topLook && name == j.durable && calledFrom("topology.restoreLost") && !calledFrom("topology.RecreateConsumer") {
		j.shared.once0.Do(func() { close(j.shared.bLooked) })
		select {
		case <-j.shared.aCreated:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c, err := j.JetStream.Consumer(ctx, stream, name)
	if j.role == "b" && err == nil && name == j.durable && calledFrom("topology.restoreLost") &&
		(j.topLook || calledFrom("topology.RecreateConsumer")) {
		j.shared.once2.Do(func() { close(j.shared.bFound) })
	}
	return c, err
}

func (j *twoReplicasJS) UpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if j.role == "a" && cfg.Durable == j.durable && calledFrom("topology.keep") {
		select {
		case <-j.shared.bFound:
		case <-time.After(20 * time.Second):
		}
	}
	return j.JetStream.UpdateConsumer(ctx, stream, cfg)
}

// One loss, two replicas binding at once: A recreates the consumer and
// reports the loss; B, whose look came before A's create, finds A's
// consumer made in RecreateConsumer (created false) still marked (A
// reports before it clears) and, since 9b49881, reports it as its own.
// The same loss is then counted by both replicas (the sum of
// chapar_consumer_losses_total is 2; the two events gone are logged as
// lost twice). bind's dedupe is per process. (The same double count
// happens before 9b49881 when B's first look falls after A's create.)
func TestReviewRev22OneLossTwoReplicasBindingAtOnceIsReportedOnce(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	oneLossTwoReplicas(t, false)
}

// The same, B's restoreLost's first look falling after A's create and
// before A's clearing: the path before 9b49881 ("created after a loss by
// a call cut before it cleared the mark ... this one reports it"). Red
// at b0fead3 too: the double count across replicas is not new; 9b49881
// adds a second window (the test above, green at b0fead3).
func TestReviewRev22OneLossTwoReplicasFirstLookAfterTheCreateIsReportedOnce(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	oneLossTwoReplicas(t, true)
}

func oneLossTwoReplicas(t *testing.T, topLook bool) {
	e, logs, sink, routes := gatewayStoppedAtThree(t)
	backlog := lostWithTwoGone(t, e)
	order := &replicaOrder{bLooked: make(chan struct{}), aCreated: make(chan struct{}), bFound: make(chan struct{})}
	_, jsA := e.Connect()
	_, jsB := e.Connect()
	durable := topology.SinkConsumer("gateway")
	var tallyA, tallyB interface{ ConsumersLost(string) (int, int) }
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		tallyA, _ = startOn(t, e, &twoReplicasJS{JetStream: jsA, role: "a", durable: durable, shared: order, topLook: topLook}, []config.Sink{sink}, routes, nil)
	}()
	go func() {
		defer wg.Done()
		tallyB, _ = startOn(t, e, &twoReplicasJS{JetStream: jsB, role: "b", durable: durable, shared: order, topLook: topLook}, []config.Sink{sink}, routes, nil)
	}()
	wg.Wait()
	if tallyA == nil || tallyB == nil {
		t.FailNow()
	}
	select {
	case <-order.bFound:
	default:
		t.Fatal("B did not find A's consumer made where the test has it look")
	}
	testenv.Eventually(t, 20*time.Second, "the rest of the backlog delivered", allDelivered(t, e, backlog[2:]))
	la, _ := tallyA.ConsumersLost("gateway")
	lb, _ := tallyB.ConsumersLost("gateway")
	if la+lb != 1 {
		t.Errorf("losses counted by A %d, by B %d; want 1 in all (one consumer lost once; 'cannot be delivered' lines: %d)",
			la, lb, logs.FilterMessageSnippet("they cannot be delivered").Len())
	}
}
