package dispatch_test

// Review of 40d7ca5 (rev23), which made a marked loss
// (topology.LostUnreportedMetadata) its maker's to report (the binding
// dispatcher's id, new in each process), another dispatcher reporting it
// only once the mark was 30 s old. Dispatchers bind only as they start: a
// mark skipped at a bind was skipped until the next start, and the
// healer then erased it. Red at 40d7ca5, green before it and since its
// revert: every bind that finds a mark reports it (a loss may be counted
// twice, never missed).

import (
	"context"
	"encoding/json"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// stopAtCheckJS holds RecreateConsumer's check (the update after its
// create) of durable until the try's context ends: the dispatcher is
// stopped there, as a SIGTERM during the bind stops it. RecreateConsumer
// then leaves what it made in place, marked, "for the next start to find".
type stopAtCheckJS struct {
	jetstream.JetStream
	durable string
	held    chan struct{}
	once    sync.Once
}

func (j *stopAtCheckJS) UpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if cfg.Durable == j.durable && calledFrom("topology.RecreateConsumer") {
		j.once.Do(func() { close(j.held) })
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return j.JetStream.UpdateConsumer(ctx, stream, cfg)
}

// gatewayInfo reads gateway's events consumer as the server has it.
func gatewayInfo(t *testing.T, e *testenv.Env) *jetstream.ConsumerInfo {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// markOf is the loss marked on a consumer, nil if none.
func markOf(t *testing.T, info *jetstream.ConsumerInfo) *topology.Restored {
	t.Helper()
	v, ok := info.Config.Metadata[topology.LostUnreportedMetadata]
	if !ok {
		return nil
	}
	var r topology.Restored
	if err := json.Unmarshal([]byte(v), &r); err != nil {
		t.Fatalf("mark %q: %v", v, err)
	}
	return &r
}

// makerStoppedMidBind: gateway lost while no dispatcher ran (two events
// gone past its floor); a dispatcher starts, recreates the consumer from
// the floor (marked, By its id), and is stopped during RecreateConsumer's
// check, before it reports. The consumer stands, marked by a process
// that is gone.
func makerStoppedMidBind(t *testing.T) (*testenv.Env, *zapLogs, config.Sink, []config.Route, []string) {
	t.Helper()
	e, logs, sink, routes := gatewayStoppedAtThree(t)
	backlog := lostWithTwoGone(t, e)
	_, js := e.Connect()
	sj := &stopAtCheckJS{JetStream: js, durable: topology.SinkConsumer("gateway"), held: make(chan struct{})}
	tally := dispatch.NewTally()
	d, err := dispatch.New(e.Config([]config.Sink{sink}, routes), dispatch.Options{Observer: tally, Logger: e.Log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, sj) }()
	select {
	case <-sj.held:
	case err := <-done:
		t.Fatalf("the maker ended before its recreation's check: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("the maker did not reach its recreation's check in 60 s")
	}
	cancel() // stopped mid-bind
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the maker did not stop in 30 s")
	}
	if lost, _ := tally.ConsumersLost("gateway"); lost != 0 {
		t.Fatalf("the maker counted %d losses before it stopped; the test wants it stopped before it reports", lost)
	}
	m := markOf(t, gatewayInfo(t, e))
	if m == nil {
		t.Fatalf("the consumer left by the stopped maker carries no loss mark; want it marked (%+v)", m)
	}
	return e, &zapLogs{logs}, sink, routes, backlog
}

// A dispatcher stopped during its bind (a rolling restart, a SIGTERM while
// the cluster is slow) after its recreation of a lost consumer landed and
// before it reported it leaves the consumer marked, for "the next start to
// find" (RecreateConsumer). The next start is the same deployment's
// restart, a new process with a new id, seconds later: the mark is not
// its own and younger than 30 s, so unreported returns nil and the bind
// says nothing. Nothing else reports a mark (the healer strips it from
// its copy), so the loss (here two events gone past max_age) is silent
// until some dispatcher starts again 30 s after the recreation, which
// may be weeks. Before 40d7ca5 this restart reported it. Red.
func TestReviewRev23AMakerStoppedMidBindIsReportedByTheRestartThatFollows(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e, logs, sink, routes, backlog := makerStoppedMidBind(t)

	_, js := e.Connect()
	tally, _ := startOn(t, e, js, []config.Sink{sink}, routes, nil)
	testenv.Eventually(t, 20*time.Second, "the rest of the backlog delivered", allDelivered(t, e, backlog[2:]))
	info := gatewayInfo(t, e)
	age := info.TimeStamp.Sub(info.Created)
	if lost, _ := tally.ConsumersLost("gateway"); lost != 1 {
		t.Errorf("the restart counted %d losses; want 1 (the consumer was recreated %v before, by the stopped process, whose mark %+v is still on it; "+
			"'cannot be delivered' lines: %d)", lost, age.Round(time.Millisecond), markOf(t, info), logs.gone())
	}
}

// zapLogs counts the lines a floor recreation with events gone logs.
type zapLogs struct{ *observer.ObservedLogs }

func (l *zapLogs) gone() int {
	return l.FilterMessageSnippet("they cannot be delivered").FilterField(zap.Uint64("unrecoverable_at_most", 2)).Len()
}

// countingChecksJS counts the healer's successful looks at durable
// (healer.check's lookup): the second done, the first's seen has run.
type countingChecksJS struct {
	jetstream.JetStream
	durable string
	looks   atomic.Int32
}

func (j *countingChecksJS) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	c, err := j.JetStream.Consumer(ctx, stream, name)
	if err == nil && name == j.durable && calledFrom("dispatch.(*healer).check") {
		j.looks.Add(1)
	}
	return c, err
}

// The same mark, left by the stopped maker and skipped by the restart, is
// then erased: the restart's healer strips it from the config it
// recreates with (healer.seen), and a second loss of the consumer (an
// operator's delete) is healed unmarked. The healer counts its own loss;
// the first, with its two events gone past max_age, is never reported by
// anyone, at any later start. Two losses, one counted, no "cannot be
// delivered" line. Red.
func TestReviewRev23AMarkSkippedAtBindIsErasedByTheHealersRecreation(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e, logs, sink, routes, backlog := makerStoppedMidBind(t)

	_, js := e.Connect()
	durable := topology.SinkConsumer("gateway")
	cj := &countingChecksJS{JetStream: js, durable: durable}
	tallyB, _ := startOn(t, e, cj, []config.Sink{sink}, routes, nil)
	testenv.Eventually(t, 20*time.Second, "the rest of the backlog delivered", allDelivered(t, e, backlog[2:]))
	testenv.Eventually(t, 20*time.Second, "the healer's second look (the first's seen done)", func() bool { return cj.looks.Load() >= 2 })
	before := gatewayInfo(t, e)
	if markOf(t, before) == nil {
		t.Log("the mark is gone before the second loss (reported since?)")
	}
	deleteConsumers(t, e, durable) // a second loss, under a running dispatcher
	testenv.Eventually(t, 20*time.Second, "the consumer recreated by the healer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), durable)
		return err == nil && !c.CachedInfo().Created.Equal(before.Created)
	})
	after := gatewayInfo(t, e)
	_, js2 := e.Connect()
	tallyC, _ := startOn(t, e, js2, []config.Sink{sink}, routes, nil)
	lb, _ := tallyB.ConsumersLost("gateway")
	lc, _ := tallyC.ConsumersLost("gateway")
	if lb+lc != 2 || logs.gone() != 1 {
		t.Errorf("losses counted by the restart %d, by a later start %d, 'cannot be delivered' lines %d; want 2 in all and 1 line "+
			"(the stopped maker's recreation with two events gone, then an operator's delete; mark after the heal: %+v)",
			lb, lc, logs.gone(), markOf(t, after))
	}
}
