package dispatch_test

// Review of 5bae085..58b3dfe (rev20): Lost reported as EnsureSink
// establishes a loss, heal waiting on an unread stream, bind without the
// floors bucket, withEarlier keeping a narrow earlier sweep.

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// landedCreateJS lets the first create of durable from a recorded floor
// (RecreateConsumer's, by start sequence) reach the server, then fails
// the call as one whose answer came after the try's deadline: a proposal
// the cluster applied after the client gave up on it (as landedUpdateJS
// lands an update).
type landedCreateJS struct {
	jetstream.JetStream
	durable string
	mu      sync.Mutex
	landed  bool
}

func (j *landedCreateJS) CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	j.mu.Lock()
	hold := cfg.Durable == j.durable && cfg.DeliverPolicy == jetstream.DeliverByStartSequencePolicy && !j.landed
	if hold {
		j.landed = true
	}
	j.mu.Unlock()
	if !hold {
		return j.JetStream.CreateConsumer(ctx, stream, cfg)
	}
	return answeredLate(ctx, func(actx context.Context) error {
		_, err := j.JetStream.CreateConsumer(actx, stream, cfg)
		return err
	})
}

// Lost is called for a consumer recreated from its floor only once
// RecreateConsumer returns it created, and the create carries no mark
// (unlike a creation by sinks[].start, LostUnreportedMetadata). A create
// the server applies but whose answer comes after the try's deadline
// leaves the consumer, recreated from the floor, in place: the next
// try's restoreLost finds it, unmarked, and says nothing. The loss (two
// events gone past max_age) is never logged or counted. The create is
// itself a request that hides the loss from a call made again
// (ConsumerSettings.Lost's promise).
func TestReviewRev20ARecreationFromTheFloorAnsweredLateStillReportsTheLoss(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e, logs, sink, routes := gatewayStoppedAtThree(t)
	backlog := lostWithTwoGone(t, e)

	_, js := e.Connect()
	lj := &landedCreateJS{JetStream: js, durable: topology.SinkConsumer("gateway")}
	tally, _ := startOn(t, e, lj, []config.Sink{sink}, routes, nil)
	lj.mu.Lock()
	landed := lj.landed
	lj.mu.Unlock()
	if !landed {
		t.Fatal("the recreation was not landed where the test lands it")
	}
	testenv.Eventually(t, 15*time.Second, "the rest of the backlog delivered", allDelivered(t, e, backlog[2:]))
	if lost, down := tally.ConsumersLost("gateway"); lost != 1 || down != 0 {
		t.Errorf("losses counted %d, not back %d; want 1, 0 (the recreation's create landed, its answer came late)", lost, down)
	}
	if n := logs.FilterMessageSnippet("they cannot be delivered").FilterField(zap.Uint64("unrecoverable_at_most", 2)).Len(); n != 1 {
		t.Errorf("%d log lines saying the 2 events that left the stream cannot be delivered; want 1 (all of them: %v)", n, messages(logs))
	}
}

// floorsDownJS is noFloorsJS while down is set: the floors bucket can be
// neither made nor read; then it is as the server has it.
type floorsDownJS struct {
	jetstream.JetStream
	bucket string
	down   atomic.Bool
}

func (j *floorsDownJS) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if cfg.Bucket == j.bucket && j.down.Load() {
		return nil, errNoQuorum
	}
	return j.JetStream.CreateOrUpdateKeyValue(ctx, cfg)
}

func (j *floorsDownJS) CreateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if cfg.Bucket == j.bucket && j.down.Load() {
		return nil, errNoQuorum
	}
	return j.JetStream.CreateKeyValue(ctx, cfg)
}

func (j *floorsDownJS) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	if bucket == j.bucket && j.down.Load() {
		return nil, errNoQuorum
	}
	return j.JetStream.KeyValue(ctx, bucket)
}

// Bound while the floors bucket could be neither made nor read (floors
// nil), the floor record is made without its stream instance, read at
// the healer's first look (rebase), and the bucket is made again as the
// healer writes (floorRecord.write with kv nil). Once the bucket can be
// made, the floor is written naming the stream instance the consumer is
// in, its start, and the floor reached.
func TestReviewRev20BoundWithoutFloorsWritesTheRightFloorOnceTheBucketIsBack(t *testing.T) {
	t.Parallel() // waits on the healer's rounds, not the CPU
	e, _, sink, routes := gatewayStoppedAtThree(t)
	deleteFloors(t, e)
	_, js := e.Connect()
	fj := &floorsDownJS{JetStream: js, bucket: e.Topo.FloorsBucket()}
	fj.down.Store(true)
	startOn(t, e, fj, []config.Sink{sink}, routes, nil)
	backlog := publishTracks(t, e, 4, "order_paid")
	testenv.Eventually(t, 15*time.Second, "the backlog delivered", allDelivered(t, e, backlog))
	testenv.Eventually(t, 10*time.Second, "the backlog acked", func() bool { return e.Idle("gateway") })
	fj.down.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := e.JS.Stream(ctx, e.Topo.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	start, err := topology.StartOf(c.CachedInfo())
	if err != nil {
		t.Fatal(err)
	}
	var f topology.Floor
	testenv.Eventually(t, 20*time.Second, "the floor written once the bucket is back", func() bool {
		kv, err := e.JS.KeyValue(ctx, e.Topo.FloorsBucket())
		if err != nil {
			return false
		}
		var found bool
		f, found, err = topology.ReadFloor(ctx, kv, "gateway", e.Topo.EventsStream())
		return err == nil && found && f.AckFloor == 7
	})
	if !f.StreamCreated.Equal(st.CachedInfo().Created) || f.StartSeq != start {
		t.Errorf("floor names stream instance %v, start %d; want %v, %d", f.StreamCreated, f.StartSeq, st.CachedInfo().Created, start)
	}
}

// Bound without the floors bucket, the floor record has no stream
// instance until the healer's first look (rebase). The events stream
// deleted and made again before that look (another dispatcher's Ensure,
// an operator's change of the stream), the healer finds the consumer
// gone and cannot tell the new stream from the old one
// (h.rec.floor.StreamCreated zero): it recreates the consumer at the old
// floor, a position in the deleted stream, and every event of the new
// stream below it is skipped. With the bucket, bind records the instance
// (EnsureSink reads the stream) and the healer recreates from 1
// (review_heal_stream_test). The stream's creation is readable without
// the bucket.
func TestReviewRev20BoundWithoutFloorsAStreamMadeAgainBeforeTheFirstLookLosesNothing(t *testing.T) {
	t.Parallel() // waits on the healer, not the CPU
	e, _, sink, routes := gatewayStoppedAtThree(t)
	_, js := e.Connect()
	startOn(t, e, &noFloorsJS{JetStream: js, bucket: e.Topo.FloorsBucket()}, []config.Sink{sink}, routes, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	// Before the healer's first look (healEvery, 5 s, after the bind).
	if err := e.JS.DeleteStream(ctx, e.Topo.EventsStream()); err != nil {
		t.Fatal(err)
	}
	if err := e.Topo.Ensure(ctx, e.JS); err != nil {
		t.Fatal(err)
	}
	// Fewer than the old floor (3): recreated at 4, all are skipped.
	again := publishTracks(t, e, 2, "order_paid")
	testenv.Eventually(t, 30*time.Second, "the new stream's events delivered", allDelivered(t, e, again))
}

// madeMeanwhileJS makes durable, as another dispatcher's healer does
// from the floor it knows (by start sequence at), just before this
// dispatcher's create of it by sinks[].start (carrying the
// lost_unreported mark) reaches the server: that create then fails with
// ErrConsumerExists and ensureEvents keeps the other's consumer.
type madeMeanwhileJS struct {
	jetstream.JetStream
	other   jetstream.JetStream
	durable string
	at      uint64
	mu      sync.Mutex
	made    bool
}

func (j *madeMeanwhileJS) CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	j.mu.Lock()
	if cfg.Durable == j.durable && cfg.Metadata[topology.LostUnreportedMetadata] != "" && !j.made {
		j.made = true
		theirs := cfg
		theirs.Metadata = map[string]string{}
		for k, v := range cfg.Metadata {
			if k != topology.LostUnreportedMetadata {
				theirs.Metadata[k] = v
			}
		}
		theirs.Metadata[topology.StartMetadata] = strconv.FormatUint(j.at, 10)
		theirs.DeliverPolicy, theirs.OptStartSeq, theirs.OptStartTime = jetstream.DeliverByStartSequencePolicy, j.at, nil
		if _, err := j.other.CreateConsumer(ctx, stream, theirs); err != nil {
			j.mu.Unlock()
			return nil, err
		}
	}
	j.mu.Unlock()
	return j.JetStream.CreateConsumer(ctx, stream, cfg)
}

// keep reports a loss "found still carrying" lost_unreported, but reads
// the mark from cfg merged over the server's metadata, and cfg is the
// create's config, which carries the mark: a consumer another dispatcher
// made between restoreLost's look and ensureEvents' create (its healer,
// from the floor it knew; ErrConsumerExists) is reported by this one as
// a loss it created from sinks[].start, at the other's start. The other
// reports its own loss: counted twice, once as what it was not. The
// floor path says of the same race "it stands, and is no loss of ours"
// (restoreLost).
func TestReviewRev20AConsumerMadeByAnotherMeanwhileIsNotReportedAsCreatedFromStart(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e, logs, sink, routes := gatewayStoppedAtThree(t)
	stopped := time.Now()
	backlog := publishTracks(t, e, 5, "order_paid")
	deleteConsumers(t, e, topology.SinkConsumer("gateway"))
	deleteFloors(t, e)
	sink.Start = stopped.UTC().Format(time.RFC3339Nano)

	_, js := e.Connect()
	mj := &madeMeanwhileJS{JetStream: js, other: e.JS, durable: topology.SinkConsumer("gateway"), at: 4}
	tally, _ := startOn(t, e, mj, []config.Sink{sink}, routes, nil)
	mj.mu.Lock()
	made := mj.made
	mj.mu.Unlock()
	if !made {
		t.Fatal("the other dispatcher's consumer was not made where the test makes it")
	}
	testenv.Eventually(t, 15*time.Second, "the backlog delivered", allDelivered(t, e, backlog))
	if lost, _ := tally.ConsumersLost("gateway"); lost != 0 {
		t.Errorf("losses counted %d by this dispatcher; want 0 (the consumer it kept was made by another, which reports its own)", lost)
	}
	if n := logs.FilterMessageSnippet("created from sinks[].start").Len(); n != 0 {
		t.Errorf("%d log lines saying the consumer was created from sinks[].start; want 0: it was made from a floor by another (all of them: %v)", n, messages(logs))
	}
}

// heal no longer recreates while the events stream cannot be read: it
// tries again with backoff. A dispatcher stopping meanwhile stops at
// once (sleep on ctx; each read bounded by brokerTimeout), and the sink
// is counted lost, not back, while it waits (readiness).
func TestReviewRev20HealerWaitingOnAnUnreadStreamStopsPromptly(t *testing.T) {
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
	tally, stop := startOn(t, e, sj, []config.Sink{sink}, routes, nil)
	first := publishTracks(t, e, 3, "order_paid")
	testenv.Eventually(t, 15*time.Second, "the first events delivered", allDelivered(t, e, first))
	hold.Store(true)
	deleteConsumers(t, e, topology.SinkConsumer("gateway"))
	testenv.Eventually(t, 30*time.Second, "the healer's stream read stalled twice", func() bool { return stalled.Load() >= 2 })
	if lost, down := tally.ConsumersLost("gateway"); lost != 1 || down != 1 {
		t.Errorf("losses %d, not back %d while the stream is unread; want 1, 1", lost, down)
	}
	began := time.Now()
	stop()
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("the dispatcher took %v to stop while its healer waited on the stream; want well under 10 s", took)
	}
}
