package dispatch_test

// Review of dd0558c on the bind's path: a bind whose hold fails (the
// sweep then keeps the prior read's last delivery), and a bind tried
// again after it released its widened consumer (PassedTo read again,
// the record raised).

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// faultJS is a dispatcher's JetStream with faults on one consumer:
// pauses refused (refusePause), or, once that consumer has been resumed
// (the bind's ReleaseWidened), the next consumer lookup runs afterRelease
// and fails with a timeout (the bind tries again).
type faultJS struct {
	jetstream.JetStream
	durable      string
	refusePause  bool
	mu           sync.Mutex
	released     bool
	afterRelease func()
}

func (f *faultJS) PauseConsumer(ctx context.Context, stream, consumer string, until time.Time) (*jetstream.ConsumerPauseResponse, error) {
	if f.refusePause && consumer == f.durable {
		return nil, errors.New("review: pause refused")
	}
	return f.JetStream.PauseConsumer(ctx, stream, consumer, until)
}

func (f *faultJS) ResumeConsumer(ctx context.Context, stream, consumer string) (*jetstream.ConsumerPauseResponse, error) {
	r, err := f.JetStream.ResumeConsumer(ctx, stream, consumer)
	if err == nil && consumer == f.durable {
		f.mu.Lock()
		f.released = true
		f.mu.Unlock()
	}
	return r, err
}

func (f *faultJS) Consumer(ctx context.Context, stream, consumer string) (jetstream.Consumer, error) {
	f.mu.Lock()
	hook := f.afterRelease
	if f.released && hook != nil {
		f.afterRelease = nil
	} else {
		hook = nil
	}
	f.mu.Unlock()
	if hook != nil {
		hook()
		return nil, fmt.Errorf("review: %w", nats.ErrTimeout)
	}
	return f.JetStream.Consumer(ctx, stream, consumer)
}

// startWith runs a dispatcher of the given config on js (the test's
// faults around a real connection) until the test ends.
func startWith(t *testing.T, e *testenv.Env, js jetstream.JetStream, sinks []config.Sink, routes []config.Route) {
	t.Helper()
	ready := make(chan struct{})
	d, err := dispatch.New(e.Config(sinks, routes), dispatch.Options{Observer: dispatch.NewTally(), Logger: e.Log, Ready: func() { close(ready) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, js) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
		}
	})
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("dispatcher did not start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("dispatcher did not start in 60 s")
	}
}

// oldLeadBacklog runs the old config (first, the lead; gateway reading
// track) once and stops it: first is a lead the next config drops, with
// what follows unread.
func oldLeadBacklog(t *testing.T) (*testenv.Env, config.Sink, config.Route) {
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
	old := e.Start([]config.Sink{first, gateway}, []config.Route{{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}, track})
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	return e, gateway, track
}

// sweepDone waits for gateway's recorded sweeps to be gone (done).
func sweepDone(t *testing.T, e *testenv.Env) {
	t.Helper()
	testenv.Eventually(t, 60*time.Second, "gateway's sweep done", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		kv, err := e.JS.KeyValue(ctx, e.Topo.FloorsBucket())
		if err != nil {
			return false
		}
		p, err := e.Topo.PendingSweeps(ctx, kv, "gateway")
		return err == nil && len(p) == 0
	})
}

// The bind's hold fails (a pause the server refuses or does not apply
// in time): leadSweeps warns and goes on, held false, and dd0558c then
// skips PassedTo for the sweep (sw.held), so it judges by the prior
// read's last delivery. The narrow consumer's pulls had scanned past a
// stray before the bind (not "meanwhile", which is all the warning
// owns up to): the widened consumer goes on past it, and the sweep takes
// it for delivered. Before dd0558c PassedTo, read once widened, raised
// the bound over it (an upper bound, held or not).
func TestReviewRev10AnUnheldBindJudgesWhatItsPullsPassedOver(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	for _, refuse := range []bool{false, true} {
		t.Run(fmt.Sprintf("hold refused=%v", refuse), func(t *testing.T) {
			t.Parallel() // independent cases, each its own server
			unheldBind(t, refuse)
		})
	}
}

func unheldBind(t *testing.T, refusePause bool) {
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
	startWith(t, e, &faultJS{JetStream: js, durable: topology.SinkConsumer("gateway"), refusePause: refusePause}, []config.Sink{gateway}, []config.Route{track})
	sweepDone(t, e)
	marker := testenv.Track(t, "order_paid", "marker")
	e.Publish(marker)
	testenv.Eventually(t, 20*time.Second, "the marker delivered", allDelivered(t, e, []string{marker.ID}))
	if gatewayIDs(t, e)[stray.ID]+unknownFor(t, e, "gateway")[stray.ID] == 0 {
		t.Error("the stray the narrow pulls passed over before the bind: neither delivered nor dead-lettered (the sweep judged by the last delivery)")
	}
}

// The bind widens gateway, reads PassedTo while it is held (exact),
// records it and releases the consumer; then a later step of the same
// attempt fails (here the marks' read after the loop) and the bind is
// tried again. Meanwhile the widened, released consumer delivers a stray
// (an old config's replica pulling it). The next attempt keeps the
// sweeps (the sink is marked), still says held, reads PassedTo again,
// now past the delivered stray, and raises the record to it: the sweep
// dead-letters the stray for gateway as well as its delivery.
func TestReviewRev10ABindTriedAgainKeepsTheBoundItReadHeld(t *testing.T) {
	t.Parallel()
	e, gateway, track := oldLeadBacklog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	publishStray(t, e) // before: a stray of the old lead's backlog
	var (
		stray2    *envelope.Envelope
		delivered []uint64
	)
	_, js := e.Connect()
	f := &faultJS{JetStream: js, durable: topology.SinkConsumer("gateway")}
	f.afterRelease = func() {
		// An old config's replica of gateway pulls the widened consumer
		// and is handed the stray stored now (it routes track events to
		// gateway: delivered).
		stray2 = publishStray(t, e)
		c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
		if err != nil {
			t.Error(err)
			return
		}
		for len(delivered) == 0 || delivered[len(delivered)-1] < stray2Seq(t, e, ctx) {
			batch, err := c.Fetch(10, jetstream.FetchMaxWait(time.Second))
			if err != nil {
				t.Error(err)
				return
			}
			n := 0
			for m := range batch.Messages() {
				meta, _ := m.Metadata()
				delivered = append(delivered, meta.Sequence.Stream)
				_ = m.Ack()
				n++
			}
			if n == 0 {
				t.Error("the widened, released consumer delivered nothing")
				return
			}
		}
	}
	startWith(t, e, f, []config.Sink{gateway}, []config.Route{track})
	if stray2 == nil {
		t.Fatal("the bind did not fail after releasing the widened consumer")
	}
	sweepDone(t, e)
	if n := unknownFor(t, e, "gateway")[stray2.ID]; n > 0 {
		t.Errorf("the stray stored after the widening, delivered by the widened consumer (stream sequences %v), is dead-lettered for gateway too", delivered)
	}
}

// stray2Seq is the events stream's last sequence (the stray just
// published).
func stray2Seq(t *testing.T, e *testenv.Env, ctx context.Context) uint64 {
	t.Helper()
	s, err := e.JS.Stream(ctx, e.Topo.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	return s.CachedInfo().State.LastSeq
}
