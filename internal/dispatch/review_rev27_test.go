package dispatch_test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/deliveries"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// holding wraps a real sink: an event whose id has a gate waits in
// Deliver until the gate is opened (or the attempt's context ends), and
// says it started.
type holding struct {
	sinks.Sink
	mu      sync.Mutex
	gates   map[string]chan struct{}
	started map[string]chan struct{}
	done    map[string]chan struct{}
}

func newHolding() *holding {
	return &holding{gates: map[string]chan struct{}{}, started: map[string]chan struct{}{}, done: map[string]chan struct{}{}}
}

func (h *holding) hold(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.gates[id], h.started[id], h.done[id] = make(chan struct{}), make(chan struct{}), make(chan struct{})
}

func (h *holding) chans(id string) (gate, started, done chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gates[id], h.started[id], h.done[id]
}

func (h *holding) Deliver(ctx context.Context, d *sinks.Delivery) error {
	gate, started, done := h.chans(d.Event.ID)
	if gate != nil {
		h.mu.Lock()
		select {
		case <-started:
		default:
			close(started)
		}
		h.mu.Unlock()
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
		err := h.Sink.Deliver(ctx, d)
		h.mu.Lock()
		select {
		case <-done:
		default:
			close(done)
		}
		h.mu.Unlock()
		return err
	}
	return h.Sink.Deliver(ctx, d)
}

func waitClosed(t *testing.T, c chan struct{}, timeout time.Duration, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(timeout):
		t.Fatalf("%s: not in %s", what, timeout)
	}
}

// An events stream deleted and made again under a running dispatcher: the
// healer recreates the sink's consumer, under the same name, from the new
// stream's first event. A message of the deleted stream still in a
// worker's hands (its vendor request slow) is acked when its request ends:
// the ack's subject ($JS.ACK.<stream>.<consumer>.…) names a stream
// sequence, and the recreated consumer listens on the same subjects, so
// the server takes it for an ack of the new stream's event at that
// sequence, pending with another worker whose request has not ended. That
// event is then settled at the server while the vendor has not accepted
// it: handed back at the stop (its attempt cut short), it is never
// delivered again, by this replica or the next.
func TestReviewRev27AnAckFromTheDeletedStreamSettlesTheNewStreamsEvent(t *testing.T) {
	t.Parallel() // waits on the healer's rounds, not on the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Timeout = time.Minute
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	h := newHolding()
	wrap := func(_ string, s sinks.Sink) sinks.Sink { h.Sink = s; return h }
	d := e.StartWrapped([]config.Sink{sink}, routes, wrap, func(c *config.Dispatcher) { c.ShutdownGrace = 500 * time.Millisecond })

	old := testenv.Track(t, "order_paid", "user-old")
	h.hold(old.ID)
	if ack := e.Publish(old); ack.Sequence != 1 {
		t.Fatalf("the old event at %d, want 1", ack.Sequence)
	}
	oldGate, oldStarted, oldDone := h.chans(old.ID)
	waitClosed(t, oldStarted, 15*time.Second, "the old event's request started")

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.JS.DeleteStream(ctx, e.Topo.EventsStream()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the sink's consumer reported lost", func() bool {
		lost, _ := d.Tally.ConsumersLost("gateway")
		return lost >= 1
	})
	if err := e.Topo.Ensure(ctx, e.JS); err != nil {
		t.Fatal(err)
	}
	fresh := testenv.Track(t, "order_paid", "user-new")
	h.hold(fresh.ID)
	if ack := e.Publish(fresh); ack.Sequence != 1 {
		t.Fatalf("the new event at %d, want 1", ack.Sequence)
	}
	freshGate, freshStarted, _ := h.chans(fresh.ID)
	waitClosed(t, freshStarted, 45*time.Second, "the new stream's event's request started (the consumer recreated)")

	// The old event's request ends: the worker acks it.
	close(oldGate)
	waitClosed(t, oldDone, 15*time.Second, "the old event's request ended")
	testenv.Eventually(t, 10*time.Second, "the old event's ack sent", func() bool { return d.Tally.DeliveredTo("gateway") >= 1 })
	c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	if err := d.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.AckFloor.Stream >= 1 || info.NumAckPending == 0 {
		t.Errorf("the new stream's event 1 is settled at the server (ack floor %d, %d pending) while its request is still under way: "+
			"the old stream's event 1's ack was taken for it", info.AckFloor.Stream, info.NumAckPending)
	}

	// Its attempt cut short by the stop: handed back, for the next start.
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	close(freshGate)
	e.Start([]config.Sink{sink}, routes)
	delivered := func() bool { return gatewayIDs(t, e)[fresh.ID] > 0 }
	deadline := time.Now().Add(30 * time.Second)
	for !delivered() && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond) // polls a condition, as testenv.Eventually
	}
	if !delivered() {
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Fatalf("the new stream's event was never delivered, and nothing is left of it at the server (consumer created %s, ack floor %d, "+
			"%d pending, %d ack pending, %d redelivered): the old stream's event 1's ack settled it",
			info.Created, info.AckFloor.Stream, info.NumPending, info.NumAckPending, info.NumRedelivered)
	}
}

// A batch's transient failure ends its sending (sinks.bisect, Chabok's
// DeliverBatch): the items after the failing request get its error
// without a request. The dispatcher cannot tell them from items that were
// sent (batcher.send decides each alike): each is charged an attempt it
// never had, and at max_attempts dead-lettered as retries exhausted,
// though the vendor never saw it. Here a Chabok batch of a track and
// six purchases: the first purchase's trackPurchase fails (500, every
// time), and those after it in its batch are dead-lettered with it, never sent.
func TestReviewRev27AnItemABatchNeverSentIsNotChargedAnAttempt(t *testing.T) {
	t.Parallel() // waits on the batcher and the vendor, not the CPU
	e := testenv.New(t)
	sink := batched(e.Sink("chabok", emulator.Chabok, nil, nil), 100, time.Second)
	sink.Retry.MaxAttempts = 1 // no retries: the first charged attempt settles
	vendor := e.Emu.Vendor(emulator.Chabok)
	vendor.SetFault(emulator.Fault{Status: 500, Match: `"eventName":"poison"`})
	d := e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"chabok"}}})
	user := envelope.User{ID: "u1", ChabokInstallationID: "inst-u1"}
	publish := func(typ string, body any) string {
		env, err := envelope.New(typ, "test", body)
		if err != nil {
			t.Fatal(err)
		}
		e.Publish(env)
		return env.ID
	}
	publish(envelope.TypeTrack, envelope.Track{Name: "opened", User: user})
	names := []string{"poison", "good_one", "good_two", "good_three", "good_four", "good_five"}
	ids := map[string]string{}
	for _, n := range names {
		ids[n] = publish(envelope.TypePurchase, envelope.Purchase{Track: envelope.Track{Name: n, User: user}, Revenue: "1000", Currency: "IRR"})
	}
	testenv.Eventually(t, 20*time.Second, "the purchases settled", func() bool {
		return len(deadLetters(t, e, dlq.Filter{}))+d.Tally.DeliveredTo("chabok") >= 1+len(names)
	})
	sent := map[string]int{}
	for _, r := range vendor.Requests() {
		for _, n := range names {
			if strings.Contains(string(r.Body), `"eventName":"`+n+`"`) {
				sent[n]++
			}
		}
	}
	if sent["poison"] == 0 {
		t.Fatalf("the poison purchase was never sent: %v", sent)
	}
	for _, r := range deadLetters(t, e, dlq.Filter{}) {
		for _, n := range names[1:] {
			if r.EventID == ids[n] && sent[n] == 0 {
				t.Errorf("%s dead-lettered (%s, %d attempt(s), status %d) though no request ever carried it: "+
					"the batch's sending ended at the poison purchase, and its unsent error was charged as an attempt", n, r.Reason, r.Attempts, r.Status)
			}
		}
	}
	// Nor counted as one: a delivered purchase's record says as many
	// attempts as requests carried it (an unsent turn showed as an attempt
	// "not sent, an earlier request of its batch failed").
	testenv.Eventually(t, 10*time.Second, "the delivered purchases' records", func() bool {
		for _, n := range names[1:] {
			if r, ok := lookup(t, e, ids[n])["chabok"]; !ok || r.State != deliveries.Delivered {
				return false
			}
		}
		return true
	})
	for _, n := range names[1:] {
		if r := lookup(t, e, ids[n])["chabok"]; r.Attempts != sent[n] {
			t.Errorf("%s: its record counts %d attempts, yet %d requests carried it", n, r.Attempts, sent[n])
		}
	}
}

// Refutation check: a dispatcher stopped while its healers wait for the
// deleted events and retries streams to be made again stops within its
// shutdown grace (heal's waits and calls end with its context).
func TestReviewRev27StopWhileHealWaitsForAStreamIsPrompt(t *testing.T) {
	t.Parallel()
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	d := e.Start([]config.Sink{sink}, routes)
	ids := publishTracks(t, e, 3, "order_paid")
	testenv.Eventually(t, 15*time.Second, "delivered", allDelivered(t, e, ids))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, s := range []string{e.Topo.EventsStream(), e.Topo.RetriesStream()} {
		if err := e.JS.DeleteStream(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 20*time.Second, "both consumers reported lost", func() bool {
		lost, down := d.Tally.ConsumersLost("gateway")
		return lost >= 2 && down >= 2
	})
	start := time.Now()
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second+brokerWait {
		t.Errorf("the stop took %s (grace 3 s)", took)
	}
}

// brokerWait is one broker call's deadline (dispatch's brokerTimeout): the
// final floor's read as a sink stops.
const brokerWait = 5 * time.Second

// notFoundJS answers "stream not found" for the events stream's reads
// while lie is set: an R3 stream's odd answers in a leader election.
type notFoundJS struct {
	jetstream.JetStream
	stream string
	lie    atomic.Int32 // answers left to falsify
}

func (j *notFoundJS) Stream(ctx context.Context, stream string) (jetstream.Stream, error) {
	if stream == j.stream && j.lie.Add(-1) >= 0 {
		return nil, jetstream.ErrStreamNotFound
	}
	return j.JetStream.Stream(ctx, stream)
}

func (j *notFoundJS) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	if stream == j.stream && j.lie.Add(-1) >= 0 {
		return nil, jetstream.ErrStreamNotFound
	}
	return j.JetStream.Consumer(ctx, stream, name)
}

// Refutation check: "stream not found" answered twice in a row (the look,
// then streamGone's read) for a stream that is there: a loss is counted
// (a false one) and the consumer, found in place, is kept as it is: same
// instance, its position untouched, nothing skipped or delivered again.
func TestReviewRev27AFalseStreamNotFoundKeepsTheConsumerWhereItIs(t *testing.T) {
	t.Parallel()
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	_, js := e.Connect()
	fj := &notFoundJS{JetStream: js, stream: e.Topo.EventsStream()}
	tally, _ := startOn(t, e, fj, []config.Sink{sink}, routes, nil)
	first := publishTracks(t, e, 5, "order_paid")
	testenv.Eventually(t, 15*time.Second, "delivered", allDelivered(t, e, first))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	before := c.CachedInfo()
	fj.lie.Store(2)
	testenv.Eventually(t, 20*time.Second, "the false loss healed", func() bool {
		lost, down := tally.ConsumersLost("gateway")
		return lost >= 1 && down == 0
	})
	again := publishTracks(t, e, 5, "order_paid")
	testenv.Eventually(t, 15*time.Second, "delivered after", allDelivered(t, e, again))
	after, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !after.Created.Equal(before.Created) {
		t.Errorf("the consumer was recreated (%s, was %s)", after.Created, before.Created)
	}
	for id, n := range gatewayIDs(t, e) {
		if n > 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
}
