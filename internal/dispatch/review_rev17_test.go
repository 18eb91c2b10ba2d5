package dispatch_test

// Review of 9d35fff (bind's tries get 2, 4 and 8 s before 10 s): what a
// try cut short leaves for the next one. A try runs out of time where
// the server answers slowly; these tests make one answer slow (or one
// request never sent in time) at a chosen point of the first try, as a
// loaded server or a forming cluster does at a point nobody chooses, and
// check what the bind that then succeeds leaves behind.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// cutATry is a stall past bind's try deadline (10 s): the call fails at
// the deadline, unsent, as one to a server that does not answer.
const cutATry = 11 * time.Second

// slowJS is a dispatcher's JetStream whose answers a test makes slow:
// before each call it asks slow (under mu), which may return a wait; the
// call then waits that long or until its context ends, and if the
// context ended first it fails as a request past its deadline does,
// unsent. afterCall runs after a call that went through.
type slowJS struct {
	jetstream.JetStream
	mu        sync.Mutex
	slow      func(op, stream, name string) time.Duration
	afterCall func(op, stream, name string)
}

func (j *slowJS) wait(ctx context.Context, op, stream, name string) error {
	j.mu.Lock()
	var d time.Duration
	if j.slow != nil {
		d = j.slow(op, stream, name)
	}
	j.mu.Unlock()
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (j *slowJS) done(op, stream, name string) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.afterCall != nil {
		j.afterCall(op, stream, name)
	}
}

func (j *slowJS) Stream(ctx context.Context, stream string) (jetstream.Stream, error) {
	if err := j.wait(ctx, "stream", stream, ""); err != nil {
		return nil, err
	}
	return j.JetStream.Stream(ctx, stream)
}

func (j *slowJS) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	if err := j.wait(ctx, "consumer", stream, name); err != nil {
		return nil, err
	}
	c, err := j.JetStream.Consumer(ctx, stream, name)
	if err == nil {
		j.done("consumer", stream, name)
	}
	return c, err
}

func (j *slowJS) CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if err := j.wait(ctx, "create", stream, cfg.Durable); err != nil {
		return nil, err
	}
	c, err := j.JetStream.CreateConsumer(ctx, stream, cfg)
	if err == nil {
		j.done("create", stream, cfg.Durable)
	}
	return c, err
}

func (j *slowJS) UpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if err := j.wait(ctx, "update", stream, cfg.Durable); err != nil {
		return nil, err
	}
	c, err := j.JetStream.UpdateConsumer(ctx, stream, cfg)
	if err == nil {
		j.done("update", stream, cfg.Durable)
	}
	return c, err
}

func (j *slowJS) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := j.JetStream.CreateOrUpdateKeyValue(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &slowKV{KeyValue: kv, js: j}, nil
}

func (j *slowJS) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := j.JetStream.KeyValue(ctx, bucket)
	if err != nil {
		return nil, err
	}
	return &slowKV{KeyValue: kv, js: j}, nil
}

// slowKV is a bucket of slowJS's: its puts are asked about as "put",
// with the bucket and the key.
type slowKV struct {
	jetstream.KeyValue
	js *slowJS
}

func (k *slowKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if err := k.js.wait(ctx, "put", k.Bucket(), key); err != nil {
		return 0, err
	}
	return k.KeyValue.Put(ctx, key, value)
}

// startOn runs a dispatcher of the given config on js until the test
// ends; ready, if not nil, runs as it is ready (before its workers and
// sweeps start).
func startOn(t *testing.T, e *testenv.Env, js jetstream.JetStream, sinks []config.Sink, routes []config.Route, ready func()) (*dispatch.Tally, func()) {
	t.Helper()
	up := make(chan struct{})
	tally := dispatch.NewTally()
	d, err := dispatch.New(e.Config(sinks, routes), dispatch.Options{Observer: tally, Logger: e.Log, Ready: func() {
		if ready != nil {
			ready()
		}
		close(up)
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, js) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("the dispatcher did not stop in 30 s")
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-up:
	case err := <-done:
		t.Fatalf("dispatcher did not start: %v", err)
	case <-time.After(90 * time.Second):
		t.Fatal("dispatcher did not start in 90 s")
	}
	return tally, stop
}

// gatewayStoppedAtThree runs one sink, gateway, until three events are
// delivered and acked, and stops it: its floor is recorded at 3.
func gatewayStoppedAtThree(t *testing.T) (*testenv.Env, *observer.ObservedLogs, config.Sink, []config.Route) {
	t.Helper()
	e := testenv.New(t)
	logs := observeLogs(e)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	d := e.Start([]config.Sink{sink}, routes)
	first := publishTracks(t, e, 3, "order_paid")
	testenv.Eventually(t, 10*time.Second, "the first events delivered", allDelivered(t, e, first))
	// Acked at the server too, so the floor written at the stop is 3 and
	// the events gone past it are those the caller removes, not more.
	testenv.Eventually(t, 10*time.Second, "the first events acked", func() bool { return e.Idle("gateway") })
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	return e, logs, sink, routes
}

// lostWithTwoGone publishes a backlog of five while gateway is stopped,
// deletes its consumer, and purges the backlog's two oldest, as max_age
// would: two events past the floor cannot be delivered.
func lostWithTwoGone(t *testing.T, e *testenv.Env) (backlog []string) {
	t.Helper()
	backlog = publishTracks(t, e, 5, "order_paid")
	deleteConsumers(t, e, topology.SinkConsumer("gateway"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := e.JS.Stream(ctx, e.Topo.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(6)); err != nil {
		t.Fatal(err)
	}
	return backlog
}

// A consumer lost while no dispatcher ran is recreated from its floor by
// the bind (topology.restoreLost), which reports it to the bind
// (SinkConsumers.Restored): logged, with the events that left the stream
// meanwhile, and counted (chapar_consumer_losses_total). The report is
// the caller's only record of the loss. A try cut short after the
// recreation drops it: EnsureSink returns an error, the next try finds
// the consumer there, and nothing is logged or counted, not even the
// events that cannot be delivered. Here the lookup of the retries
// consumer, after the events consumer was recreated, stalls past the
// try's deadline (cutATry), once. (Found when tries of 2 s made cuts
// likely; red at 10 s as well.)
func TestReviewRev17ATryCutAfterARecreationStillReportsTheLoss(t *testing.T) {
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
		if op == "consumer" && name == topology.RetryConsumer("gateway") && recreated && !cut {
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
		t.Errorf("losses counted %d, not back %d; want 1, 0 (the try that recreated the consumer was cut short, and its report with it)", lost, down)
	}
	if n := logs.FilterMessageSnippet("they cannot be delivered").FilterField(zap.Uint64("unrecoverable_at_most", 2)).Len(); n != 1 {
		t.Errorf("%d log lines saying the 2 events that left the stream cannot be delivered; want 1 (all of them: %v)", n, messages(logs))
	}
}

// A new lead's sweep is recorded with the stream's end at its hold, then
// lowered to where its widened consumer goes on from (PassedTo), in
// memory and in the record. A try that lowers it in memory and runs out
// of time on the record's write leaves the record high; the next try
// reads PassedTo again, finds it no lower than the sweep in memory, and
// does not write it. The sweep this process runs is right, but one a
// later bind resumes (this one stopped first) judges by the record: the
// strays the widened consumer delivered are dead-lettered for it too.
// Here the lowering's write stalls past the try's deadline (cutATry),
// once.
func TestReviewRev17ASweepLoweredInACutTryIsRecordedLowered(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	e, gateway, track := oldLeadBacklog(t)
	// Strays above where gateway's narrow consumer stands: its widened
	// consumer delivers them.
	strays := []string{publishStray(t, e).ID, publishStray(t, e).ID}

	_, js := e.Connect()
	var puts int
	var cut bool
	sj := &slowJS{JetStream: js}
	sj.slow = func(op, bucket, key string) time.Duration {
		if op != "put" || !strings.HasPrefix(key, "Sweep.gateway.") {
			return 0
		}
		// The first put records the sweep; the second lowers it.
		if puts++; puts == 2 {
			cut = true
			return cutATry // past the try's deadline
		}
		return 0
	}
	var stall sync.Once
	_, stop := startOn(t, e, sj, []config.Sink{gateway}, []config.Route{track}, func() {
		// The sweep this process runs must not finish (and delete the
		// record) before the test reads it: its reads of the stream
		// fail from now on.
		stall.Do(func() {
			sj.mu.Lock()
			defer sj.mu.Unlock()
			sj.slow = func(op, stream, _ string) time.Duration {
				if op == "stream" && stream == e.Topo.EventsStream() {
					return time.Hour
				}
				return 0
			}
		})
	})
	sj.mu.Lock()
	wasCut := cut
	sj.mu.Unlock()
	if !wasCut {
		t.Fatal("the first try was not cut where the test cuts it")
	}
	testenv.Eventually(t, 20*time.Second, "the strays delivered by the widened consumer", allDelivered(t, e, strays))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := e.JS.KeyValue(ctx, e.Topo.FloorsBucket())
	if err != nil {
		t.Fatal(err)
	}
	pending, err := e.Topo.PendingSweeps(ctx, kv, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := pending[0]; !ok {
		t.Fatal("no sweep recorded for gateway")
	} else if p.Prior.Delivered != 0 {
		t.Errorf("the sweep is recorded as judging up to stream sequence %d; want 0, where the widened consumer went on from (it delivered the strays)", p.Prior.Delivered)
	}
	// This process stops before its sweep is done; the next bind resumes
	// the sweep from the record.
	stop()
	startWith(t, e, js, []config.Sink{gateway}, []config.Route{track})
	sweepDone(t, e)
	for _, id := range strays {
		if n := gatewayIDs(t, e)[id]; n != 1 {
			t.Errorf("stray %s delivered %d times; want once", id, n)
		}
		if n := unknownFor(t, e, "gateway")[id]; n != 0 {
			t.Errorf("stray %s, delivered by the widened consumer, is dead-lettered for gateway too (%d) by the sweep resumed from the record", id, n)
		}
	}
}

func (k *slowKV) ListKeysFiltered(ctx context.Context, filters ...string) (jetstream.KeyLister, error) {
	if err := k.js.wait(ctx, "keys", k.Bucket(), strings.Join(filters, " ")); err != nil {
		return nil, err
	}
	return k.KeyValue.ListKeysFiltered(ctx, filters...)
}

// What bind does after the marks' second read (WidenTakeovers, then
// SpreadLeaders) is not fatal: it warns and the bind succeeds. It runs
// on what is left of the try's time, and a try whose time is up there
// succeeds without it: nothing tries it again until the next start.
// Here the listing of the lead's takeover records stalls past the try's
// deadline (cutATry), once. The sink added after the takeover is not added to it, and
// `dispatcher sinks remove` of the old lead is refused while it has a
// backlog (TestReviewASinkAddedAfterTheTakeoverDoesNotWedgeTheRemoval's
// case), until some dispatcher starts again.
func TestReviewRev17ABindCutAfterItsMarksWidensTheTakeovers(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	late := e.Sink("late", emulator.Chabok, nil, nil)
	purchase := config.Route{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
	if err := e.Start([]config.Sink{first, gateway}, []config.Route{purchase, track}).Stop(); err != nil {
		t.Fatal(err)
	}
	stray := publishStray(t, e)
	// The rollout without the lead.
	y := e.Start([]config.Sink{gateway}, []config.Route{track})
	testenv.Eventually(t, 30*time.Second, "the stray in the old lead's backlog judged for gateway", func() bool {
		return gatewayIDs(t, e)[stray.ID]+unknownFor(t, e, "gateway")[stray.ID] > 0
	})
	if err := leadRemovable(t, e, "first"); err != nil {
		t.Fatalf("removal once the rollout without the lead made gateway the lead: %v", err)
	}
	if err := y.Stop(); err != nil {
		t.Fatal(err)
	}
	// A later rollout adds a sink; the takeovers' listing answers slowly
	// once.
	_, js := e.Connect()
	var slowed bool
	sj := &slowJS{JetStream: js}
	sj.slow = func(op, _, filter string) time.Duration {
		if op == "keys" && strings.HasPrefix(filter, "Lead.") && !slowed {
			slowed = true
			return cutATry // past the try's deadline
		}
		return 0
	}
	identify := config.Route{Types: []string{envelope.TypeIdentify}, Sinks: []string{"late"}}
	_, stop := startOn(t, e, sj, []config.Sink{gateway, late}, []config.Route{track, identify}, nil)
	stop()
	publishTracks(t, e, 3, "order_paid") // the old lead's backlog grows
	if err := leadRemovable(t, e, "first"); err != nil {
		t.Errorf("removal of the old lead once a bind added a sink after the takeover: %v", err)
	}
}

// A lead change bound by a server that answers every bind request slowly
// (a random wait, 0 to twice mean, on each lookup, creation, update and
// put): the first tries run out of time at points no test picks, some
// after the lead is marked, its sweeps recorded or some sinks updated.
// The bind that succeeds leaves the layout right (gateway the lead on
// every partition, reading everything, crm narrow, one fence per sink),
// every event delivered once, every stray of the old lead's backlog
// either delivered or dead-lettered for gateway (once), the invalid
// envelope dead-lettered once, and the takeover recorded.
func TestReviewRev17ALeadChangeBoundBySlowAnswersLeavesItRight(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	for _, c := range []struct {
		mean time.Duration
		seed uint64
	}{{40 * time.Millisecond, 1}, {90 * time.Millisecond, 2}, {150 * time.Millisecond, 3}} {
		t.Run(fmt.Sprintf("mean=%s", c.mean), func(t *testing.T) {
			t.Parallel() // each its own server
			leadChangeBoundSlowly(t, c.mean, c.seed)
		})
	}
}

func leadChangeBoundSlowly(t *testing.T, mean time.Duration, seed uint64) {
	e := envWith(t, 2)
	logs := observeLogs(e)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	crm := e.Sink("crm", emulator.Chabok, nil, nil)
	purchase := config.Route{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
	identify := config.Route{Types: []string{envelope.TypeIdentify}, Sinks: []string{"crm"}}
	if err := e.Start([]config.Sink{first, gateway, crm}, []config.Route{purchase, track, identify}).Stop(); err != nil {
		t.Fatal(err)
	}
	// The old lead's backlog.
	e.PublishRaw(e.Topo.EventSubject("com.shop.order.shipped"), "bad-1", []byte(`{"not":"an envelope"}`))
	var strays []string
	for i := range 6 {
		strays = append(strays, publishStrayOf(t, e, fmt.Sprintf("stray-%d", i)).ID)
	}
	ids := publishTracks(t, e, 10, "order_paid")

	_, js := e.Connect()
	rng := rand.New(rand.NewPCG(seed, seed))
	sj := &slowJS{JetStream: js}
	sj.slow = func(string, string, string) time.Duration { return time.Duration(rng.Int64N(int64(2 * mean))) }
	// Events stored while the bind runs, strays among them.
	var during sync.WaitGroup
	stopPub := make(chan struct{})
	var duringIDs, duringStrays []string
	during.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stopPub:
				return
			case <-time.After(300 * time.Millisecond):
			}
			env := testenv.Track(t, "order_paid", fmt.Sprintf("during-%d", i))
			raw, err := env.Marshal()
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := e.JS.Publish(context.Background(), e.Topo.SubjectOf(env), raw, jetstream.WithMsgID(env.ID)); err != nil {
				t.Error(err)
				return
			}
			duringIDs = append(duringIDs, env.ID)
			if i%3 == 0 {
				stray := testenv.Track(t, "order_paid", fmt.Sprintf("during-stray-%d", i))
				raw, _ := stray.Marshal()
				if _, err := e.JS.Publish(context.Background(), e.Topo.EventSubjectFor("com.shop.order.shipped", stray.PartitionKey()), raw, jetstream.WithMsgID(stray.ID)); err != nil {
					t.Error(err)
					return
				}
				duringStrays = append(duringStrays, stray.ID)
			}
		}
	})
	began := time.Now()
	startOn(t, e, sj, []config.Sink{gateway, crm}, []config.Route{track, identify}, func() {
		sj.mu.Lock()
		sj.slow = nil
		sj.mu.Unlock()
	})
	close(stopPub)
	during.Wait()
	cuts := logs.FilterMessageSnippet("JetStream not ready; waiting").Len()
	t.Logf("bound in %s, after %d tries cut short; %d events and %d strays stored meanwhile", time.Since(began).Round(time.Millisecond), cuts, len(duringIDs), len(duringStrays))
	ids = append(ids, duringIDs...)
	strays = append(strays, duringStrays...)

	testenv.Eventually(t, 30*time.Second, "the events delivered", allDelivered(t, e, ids))
	sweepDone(t, e)
	testenv.Eventually(t, 30*time.Second, "settled", func() bool { return e.Idle("gateway", "crm") })
	assertDeliveredOnce(t, e, ids)
	got, unknown := gatewayIDs(t, e), unknownFor(t, e, "gateway")
	for _, id := range strays {
		if n := got[id] + unknown[id]; n != 1 {
			t.Errorf("stray %s: delivered %d, dead-lettered for gateway %d; want one of them, once", id, got[id], unknown[id])
		}
	}
	if n := len(deadLetters(t, e, dlq.Filter{Reason: "invalid_envelope"})); n != 1 {
		t.Errorf("the invalid envelope in the old lead's backlog: %d dead letters, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, sink := range []string{"gateway", "crm"} {
		fences := map[string]bool{}
		for i, stream := range e.Topo.EventsStreams() {
			c, err := e.JS.Consumer(ctx, stream, topology.SinkConsumer(sink))
			if err != nil {
				t.Fatal(err)
			}
			info := c.CachedInfo()
			fences[info.Config.Metadata[topology.FenceMetadata]] = true
			every := fmt.Sprint(topology.FiltersOf(info.Config)) == fmt.Sprint([]string{e.Topo.PartitionSubjects(i)})
			if lead := topology.IsLead(info); lead != (sink == "gateway") || every != (sink == "gateway") || info.Paused {
				t.Errorf("%s on %s: lead %v, reads every subject %v, paused %v; want the lead reading everything for gateway only, none paused",
					sink, stream, lead, every, info.Paused)
			}
		}
		if len(fences) != 1 {
			t.Errorf("%s's consumers carry fences %v; want one", sink, fences)
		}
	}
	if err := leadRemovable(t, e, "first"); err != nil {
		t.Errorf("removal of the old lead once gateway's sweep is done: %v", err)
	}
}

// lateUpdateJS holds back the first update of durable that marks it the
// lead: the try's call fails as one past its deadline does, and the
// update reaches the server only once the next try has read whether the
// sink leads (its first lookup of durable after the hold): a proposal a
// loaded cluster applies after the client gave up on it.
type lateUpdateJS struct {
	jetstream.JetStream
	durable string
	mu      sync.Mutex
	held    *jetstream.ConsumerConfig
	stream  string
	applied bool
}

func (j *lateUpdateJS) UpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	j.mu.Lock()
	if cfg.Durable == j.durable && cfg.Metadata[topology.LeadMetadata] == "true" && j.held == nil && !j.applied {
		c := cfg
		j.held, j.stream = &c, stream
		j.mu.Unlock()
		<-ctx.Done()
		return nil, ctx.Err()
	}
	j.mu.Unlock()
	return j.JetStream.UpdateConsumer(ctx, stream, cfg)
}

func (j *lateUpdateJS) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	c, err := j.JetStream.Consumer(ctx, stream, name)
	j.mu.Lock()
	defer j.mu.Unlock()
	if name == j.durable && j.held != nil && !j.applied {
		j.applied = true
		uctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, uerr := j.JetStream.UpdateConsumer(uctx, j.stream, *j.held); uerr != nil {
			return nil, uerr
		}
	}
	return c, err
}

// A try cut short while its widening of the new lead is under way on the
// server: the update lands after the next try read the marks (gateway not
// the lead yet) and before it reads what gateway's consumer read. That
// try finds the consumer reading every subject, takes it for one that
// checked everything, and sweeps nothing; the stray its narrow pulls had
// passed over is neither delivered nor dead-lettered for gateway. (The
// first try's sweep record is left behind, so the next start resumes it:
// the stray waits for a restart, and `sinks remove` of the old lead for
// that.) Red until a try keeps the sweeps an earlier try found owed
// where it finds none (withEarlier).
func TestReviewRev17AWideningLandingLateLeavesTheSweep(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	e, gateway, track := oldLeadBacklog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	stray := publishStray(t, e)
	// An old replica's narrow pull scans past it, delivering nothing.
	c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
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
			t.Fatal("the stray the narrow pulls passed over before the bind: neither delivered nor dead-lettered for gateway (the try after the late widening swept nothing)")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
