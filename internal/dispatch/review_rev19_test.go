package dispatch_test

// Review of 008fbfc..5bae085 (rev19): the floor record's consumer
// instance (healer.rebase), the lost_unreported mark (a consumer created
// by sinks[].start), and a bind try keeping an earlier try's sweeps
// (withEarlier).

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// landedUpdateJS lets the update that clears gateway's lost_unreported
// mark (ensureEvents' start-recording update after a creation by
// sinks[].start) reach the server, then fails the call as one whose
// answer came after the try's deadline: a proposal the cluster applied
// after the client gave up on it (the way lateUpdateJS lands a widening).
type landedUpdateJS struct {
	jetstream.JetStream
	durable string
	mu      sync.Mutex
	created bool
	landed  bool
}

func (j *landedUpdateJS) CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := j.JetStream.CreateConsumer(ctx, stream, cfg)
	if err == nil && cfg.Durable == j.durable && cfg.Metadata[topology.LostUnreportedMetadata] != "" {
		j.mu.Lock()
		j.created = true
		j.mu.Unlock()
	}
	return c, err
}

func (j *landedUpdateJS) UpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	j.mu.Lock()
	hold := cfg.Durable == j.durable && j.created && !j.landed && cfg.Metadata[topology.LostUnreportedMetadata] == ""
	if hold {
		j.landed = true
	}
	j.mu.Unlock()
	if !hold {
		return j.JetStream.UpdateConsumer(ctx, stream, cfg)
	}
	return answeredLate(ctx, func(actx context.Context) error {
		_, err := j.JetStream.UpdateConsumer(actx, stream, cfg)
		return err
	})
}

// answeredLate applies a request on a deadline of its own, then answers
// as a call whose answer came after the caller's deadline (ctx): a
// proposal the cluster applied after the client gave up on it.
func answeredLate(ctx context.Context, apply func(context.Context) error) (jetstream.Consumer, error) {
	actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := apply(actx); err != nil {
		return nil, err
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

// The mark that says a consumer created by sinks[].start still owes its
// loss's report is cleared on the server (ensureEvents' update, or keep's
// with reported) before the bind reports the loss (EnsureSink appends it
// to Restored only once ensureEvents returned). A try whose clearing
// update lands but whose answer comes after the try's deadline leaves
// the consumer unmarked and the loss unreported: the next try's
// restoreLost finds a consumer without the mark, and nothing is logged or
// counted. The case TestReviewRev18ATryCutAfterACreationFromStartStillReportsTheLoss
// covers, with the update applied instead of unsent.
func TestReviewRev19ALostMarkClearedByAnUpdateAnsweredLateStillReportsTheLoss(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e, logs, sink, routes := gatewayStoppedAtThree(t)
	stopped := time.Now()
	backlog := publishTracks(t, e, 5, "order_paid")
	deleteConsumers(t, e, topology.SinkConsumer("gateway"))
	deleteFloors(t, e)
	sink.Start = stopped.UTC().Format(time.RFC3339Nano)

	_, js := e.Connect()
	lj := &landedUpdateJS{JetStream: js, durable: topology.SinkConsumer("gateway")}
	tally, _ := startOn(t, e, lj, []config.Sink{sink}, routes, nil)
	lj.mu.Lock()
	landed := lj.landed
	lj.mu.Unlock()
	if !landed {
		t.Fatal("the clearing update was not landed where the test lands it")
	}
	testenv.Eventually(t, 15*time.Second, "the backlog delivered", allDelivered(t, e, backlog))
	if lost, down := tally.ConsumersLost("gateway"); lost != 1 || down != 0 {
		t.Errorf("losses counted %d, not back %d; want 1, 0 (the try's clearing update landed, its answer came late)", lost, down)
	}
	if n := logs.FilterMessageSnippet("created from sinks[].start").Len(); n != 1 {
		t.Errorf("%d log lines saying the consumer was created from sinks[].start; want 1 (all of them: %v)", n, messages(logs))
	}
}

// withEarlier keeps an earlier try's sweep only on a partition the later
// try's read owes none on. A new lead whose consumer started above the
// old lead's floor (a sink added while the old lead had a backlog) owes a
// sweep whatever it reads: below its start. Its widening landing late
// (after the next try read the marks), that try reads the consumer as
// reading every subject from its start, owes a sweep of what is below
// the start only, and withEarlier drops the earlier try's sweep of the
// partition, which covered what the narrow pulls had passed over above
// the start. The later try's record overwrites the earlier one's too, so
// no restart resumes it: the stray is never checked.
func TestReviewRev19AWideningLandingLateOnALeadStartedAboveTheOldFloorLeavesTheStray(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
	purchase := config.Route{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}
	// first, the lead, alone: its floor is 0.
	if err := e.Start([]config.Sink{first}, []config.Route{purchase}).Stop(); err != nil {
		t.Fatal(err)
	}
	// Its backlog, unread while gateway is added: gateway starts above it.
	publishTracks(t, e, 2, "order_paid")
	_, js0 := e.Connect()
	_, stopOld := startOn(t, e, js0, []config.Sink{first, gateway}, []config.Route{purchase, track}, func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if _, err := e.JS.PauseConsumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("first"), time.Now().Add(time.Hour)); err != nil {
			t.Error(err)
		}
	})
	stopOld()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := e.JS.ResumeConsumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("first")); err != nil {
		t.Fatal(err)
	}
	c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	if start, err := topology.StartOf(c.CachedInfo()); err != nil || start != 3 {
		t.Fatalf("gateway's consumer starts at %d (%v); want 3, above first's backlog", start, err)
	}
	fc, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("first"))
	if err != nil {
		t.Fatal(err)
	}
	if f := fc.CachedInfo().AckFloor.Stream; f != 0 {
		t.Fatalf("first's ack floor %d; want 0 (its backlog unread)", f)
	}

	stray := publishStray(t, e)
	// An old replica's narrow pull scans past it, delivering nothing.
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
		t.Fatal("the narrow consumer delivered the stray")
	}
	testenv.Eventually(t, 5*time.Second, "the narrow consumer past the stray", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.NumPending == 0
	})
	_, js := e.Connect()
	lj := &lateUpdateJS{JetStream: js, durable: topology.SinkConsumer("gateway")}
	startWith(t, e, lj, []config.Sink{gateway}, []config.Route{track})
	lj.mu.Lock()
	applied := lj.applied
	lj.mu.Unlock()
	if !applied {
		t.Fatal("the widening was not held back where the test holds it")
	}
	marker := testenv.Track(t, "order_paid", "marker")
	e.Publish(marker)
	testenv.Eventually(t, 20*time.Second, "the marker delivered", allDelivered(t, e, []string{marker.ID}))
	deadline := time.Now().Add(20 * time.Second)
	for gatewayIDs(t, e)[stray.ID]+unknownFor(t, e, "gateway")[stray.ID] == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the stray the narrow pulls passed over before the bind: neither delivered nor dead-lettered for gateway " +
				"(the try after the late widening swept only below gateway's start, and dropped the earlier try's sweep)")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// noFloorsJS cannot make, update or read the floors bucket (its stream
// without quorum, say): bind goes on without it, as its comment says, for
// a dispatcher whose consumers all exist.
type noFloorsJS struct {
	jetstream.JetStream
	bucket string
}

var errNoQuorum = errors.New("review: the floors bucket has no quorum")

func (j *noFloorsJS) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if cfg.Bucket == j.bucket {
		return nil, errNoQuorum
	}
	return j.JetStream.CreateOrUpdateKeyValue(ctx, cfg)
}

func (j *noFloorsJS) CreateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if cfg.Bucket == j.bucket {
		return nil, errNoQuorum
	}
	return j.JetStream.CreateKeyValue(ctx, cfg)
}

func (j *noFloorsJS) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	if bucket == j.bucket {
		return nil, errNoQuorum
	}
	return j.JetStream.KeyValue(ctx, bucket)
}

// A replica binding while the floors bucket can be neither made nor read
// (floors nil) is to bind the sinks whose consumers exist. EnsureSink
// then returns no StreamsCreated (only read with floors), and bind
// indexes cons.StreamsCreated[i] for every events consumer: the
// dispatcher panics (index out of range), which kills the process. Not
// from this change (c26aed4), but it answers whether a replica binding
// without floors can leave lost_unreported standing: it cannot bind at
// all. Red (a panic) until bind makes the floor record without it.
func TestReviewRev19ABindWithoutTheFloorsBucketBindsTheSinksWhoseConsumersExist(t *testing.T) {
	t.Parallel() // waits on binds and the vendor, not the CPU
	e, _, sink, routes := gatewayStoppedAtThree(t)
	backlog := publishTracks(t, e, 2, "order_paid")
	_, js := e.Connect()
	startOn(t, e, &noFloorsJS{JetStream: js, bucket: e.Topo.FloorsBucket()}, []config.Sink{sink}, routes, nil)
	testenv.Eventually(t, 15*time.Second, "the backlog delivered", allDelivered(t, e, backlog))
}
