package dispatch_test

// Engine v2 against the faults of issue 9, each reproduced against a real
// embedded JetStream and the vendor emulator. Each failed on engine v1.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// misbehaving wraps a real sink: events whose id is in fail get a
// transient 500 without a request, events in panic make Deliver panic;
// everything else goes to the vendor.
type misbehaving struct {
	sinks.Sink
	mu    sync.Mutex
	fail  map[string]bool
	panic map[string]bool
	calls map[string]int
}

func (m *misbehaving) Deliver(ctx context.Context, d *sinks.Delivery) error {
	m.mu.Lock()
	m.calls[d.Event.ID]++
	fail, boom := m.fail[d.Event.ID], m.panic[d.Event.ID]
	m.mu.Unlock()
	if boom {
		panic("a sink bug triggered by " + d.Event.ID)
	}
	if fail {
		return &sinks.Error{Reason: outcome.RetriesExhausted, Transient: true, Status: 500, Message: "this event always fails"}
	}
	return m.Sink.Deliver(ctx, d)
}

func (m *misbehaving) Calls(id string) int { m.mu.Lock(); defer m.mu.Unlock(); return m.calls[id] }

func startMisbehaving(t *testing.T, e *testenv.Env, cfg config.Sink, opts ...func(*config.Dispatcher)) (*testenv.Dispatcher, *misbehaving) {
	t.Helper()
	m := &misbehaving{fail: map[string]bool{}, panic: map[string]bool{}, calls: map[string]int{}}
	wrap := func(_ string, s sinks.Sink) sinks.Sink { m.Sink = s; return m }
	d := e.StartWrapped([]config.Sink{cfg}, []config.Route{{Sinks: []string{cfg.Name}}}, wrap, opts...)
	return d, m
}

// Issue 9.2: events waiting for a retry must not fill the sink's
// max_ack_pending window and stall the healthy ones.
func TestRetriesDoNotHoldTheQueue(t *testing.T) {
	t.Parallel() // waits on the server and the vendor; the poison events' retries are 30 s away
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency, sink.MaxAckPending = 4, 4
	sink.Retry.InitialInterval, sink.Retry.MaxInterval = 30*time.Second, 30*time.Second
	sink.Breaker.FailureThreshold = 1000
	d, m := startMisbehaving(t, e, sink)
	var poison []string
	for i := range 8 {
		env := testenv.Track(t, "order_paid", fmt.Sprintf("bad-%d", i))
		m.mu.Lock()
		m.fail[env.ID] = true
		m.mu.Unlock()
		poison = append(poison, env.ID)
		e.Publish(env)
	}
	ids := publishTracks(t, e, 100, "order_paid")
	// Well inside the poison events' 30 s backoff.
	testenv.Eventually(t, 15*time.Second, "the healthy events delivered past the retrying ones", allDelivered(t, e, ids))
	for _, id := range poison {
		if n := m.Calls(id); n != 1 {
			t.Errorf("poison event called %d times, want 1 (its retry is 30 s away)", n)
		}
	}
	if got := d.Tally.DeliveredTo("gateway"); got != 100 {
		t.Errorf("delivered %d", got)
	}
}

// Issue 9.5: a vendor throttling for longer than max_attempts retries
// would last does not exhaust the event: throttling is not charged.
func TestThrottlingDoesNotExhaustAttempts(t *testing.T) {
	t.Parallel() // waits on replicas and the vendor, not on the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Retry.MaxAttempts = 2
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 429, RetryAfter: "1", Count: 4})
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}})
	ids := publishTracks(t, e, 1, "order_paid")
	testenv.Eventually(t, 20*time.Second, "delivered after four 429s", allDelivered(t, e, ids))
	if recs := deadLetters(t, e, dlq.Filter{}); len(recs) != 0 {
		t.Errorf("dead-lettered while throttled: %+v", recs[0])
	}
	// No request before the time the vendor asked for.
	var last time.Time
	for _, r := range vendor.Requests() {
		if !last.IsZero() && r.At.Sub(last) < time.Second-10*time.Millisecond {
			t.Errorf("request %s after a 429 asking for 1s", r.At.Sub(last))
		}
		last = r.At
	}
}

// Issue 9.6: attempts are vendor requests. An outage (breaker open, held
// and handed-back messages) followed by a permanent error records exactly
// the requests the vendor saw.
func TestAttemptsAreVendorRequests(t *testing.T) {
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 2
	sink.Retry.MaxAttempts = 3
	sink.Breaker = retry.BreakerSettings{FailureThreshold: 2, OpenTimeout: 300 * time.Millisecond, Interval: time.Minute}
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 503, Count: 6})
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}}, func(c *config.Dispatcher) { c.AckWait = time.Second })
	ids := publishTracks(t, e, 1, "order_paid")
	testenv.Eventually(t, 30*time.Second, "the outage ridden out", func() bool { return vendor.Count(503) == 6 })
	vendor.SetFault(emulator.Fault{Status: 400, Code: "BAD_REQUEST", Count: 1})
	var recs []*dlq.Record
	testenv.Eventually(t, 30*time.Second, "the dead letter", func() bool {
		recs = deadLetters(t, e, dlq.Filter{})
		return len(recs) == 1
	})
	if r := recs[0]; r.EventID != ids[0] || r.Reason != outcome.VendorRejected || r.Attempts != vendor.Count(0) {
		t.Errorf("record %+v; the vendor saw %d requests", r, vendor.Count(0))
	}
}

// Issue 9.7: a producer's JetStream headers (Nats-Expected-*) must not
// make every retry of the event fail.
func TestProducerJetStreamHeadersDoNotBreakRetries(t *testing.T) {
	t.Parallel() // waits on a retry's backoff, not on the CPU
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 503, Count: 1})
	e.Start([]config.Sink{e.Sink("gateway", emulator.MetrixGateway, slugs, nil)}, []config.Route{{Sinks: []string{"gateway"}}})
	env := testenv.Track(t, "order_paid", "u1")
	raw, _ := env.Marshal()
	m := nats.NewMsg(e.Topo.EventSubject(env.Type))
	m.Data = raw
	m.Header.Set(jetstream.ExpectedStreamHeader, e.Topo.EventsStream())
	m.Header.Set(jetstream.MsgIDHeader, env.ID)
	if _, err := e.JS.PublishMsg(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "delivered on the retry", allDelivered(t, e, []string{env.ID}))
}

// Issue 9.9: an event naming a sink no dispatcher runs is dead-lettered as
// unknown_destination, and once the sink is configured, replay delivers it.
func TestUnknownDestinationReplaysOnceConfigured(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	first := e.Start([]config.Sink{e.Sink("chabok", emulator.Chabok, nil, nil)}, []config.Route{{Sinks: []string{"chabok"}}})
	env := testenv.Track(t, "order_paid", "u1", envelope.WithDestinations("gateway"))
	e.Publish(env)
	testenv.Eventually(t, 10*time.Second, "unknown_destination", func() bool {
		recs := deadLetters(t, e, dlq.Filter{Reason: outcome.UnknownDestination, Sink: "gateway"})
		return len(recs) == 1 && recs[0].EventID == env.ID
	})
	store := dlq.NewStore(e.JS, e.Topo)
	if res, err := store.Replay(context.Background(), dlq.Filter{}, dlq.ReplayOptions{}); err != nil || res.Skipped != 1 || res.Replayed != 0 {
		t.Fatalf("replay before the sink exists: %+v %v", res, err)
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	// The rolling deploy that adds the sink.
	sinkCfgs := []config.Sink{e.Sink("chabok", emulator.Chabok, nil, nil), e.Sink("gateway", emulator.MetrixGateway, slugs, nil)}
	e.Start(sinkCfgs, []config.Route{{Sinks: []string{"chabok"}}})
	if res, err := store.Replay(context.Background(), dlq.Filter{}, dlq.ReplayOptions{}); err != nil || res.Replayed != 1 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	testenv.Eventually(t, 10*time.Second, "delivered to the new sink", allDelivered(t, e, []string{env.ID}))
	if n := e.Emu.Vendor(emulator.Chabok).Count(0); n != 0 {
		t.Errorf("chabok got %d requests for an event addressed to gateway only", n)
	}
}

// Issue 9.11: a panic in a sink dead-letters that message and the process
// and the stream go on.
func TestPanicDeadLettersTheMessageAndFlowContinues(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	d, m := startMisbehaving(t, e, e.Sink("gateway", emulator.MetrixGateway, slugs, nil))
	bad := testenv.Track(t, "order_paid", "boom")
	m.mu.Lock()
	m.panic[bad.ID] = true
	m.mu.Unlock()
	e.Publish(bad)
	ids := publishTracks(t, e, 20, "order_paid")
	testenv.Eventually(t, 10*time.Second, "the others delivered", allDelivered(t, e, ids))
	var recs []*dlq.Record
	testenv.Eventually(t, 10*time.Second, "the panic dead-lettered", func() bool {
		recs = deadLetters(t, e, dlq.Filter{Reason: outcome.HandlerPanic})
		return len(recs) == 1
	})
	if recs[0].EventID != bad.ID || d.Tally.Panics() != 1 || m.Calls(bad.ID) != 1 {
		t.Errorf("record %+v, %d panics, %d calls", recs[0], d.Tally.Panics(), m.Calls(bad.ID))
	}
}

// Issue 9.11: hostile binary-mode envelopes (invalid UTF-8 destinations,
// a NUL in the id) are dead-lettered as invalid, never delivered, and the
// stream flows.
func TestHostileEnvelopesAreDeadLetteredNotDelivered(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	d := e.Start([]config.Sink{e.Sink("gateway", emulator.MetrixGateway, slugs, nil)}, []config.Route{{Sinks: []string{"gateway"}}})
	hostile := []nats.Header{
		{"ce-specversion": {"1.0"}, "ce-id": {"h-1"}, "ce-source": {"x"}, "ce-type": {envelope.TypeTrack}, "ce-destinations": {"gate\xffway"}},
		{"ce-specversion": {"1.0"}, "ce-id": {"h-\x002"}, "ce-source": {"x"}, "ce-type": {envelope.TypeTrack}},
		{"ce-specversion": {"1.0"}, "ce-id": {"h-3\xfe"}, "ce-source": {"x"}, "ce-type": {envelope.TypeTrack}},
	}
	for i, h := range hostile {
		m := nats.NewMsg(e.Topo.EventSubject(envelope.TypeTrack))
		m.Header = h
		m.Data = []byte(`{"name":"order_paid","user":{"id":"u1"}}`)
		m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("hostile-%d", i))
		if _, err := e.JS.PublishMsg(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	ids := publishTracks(t, e, 5, "order_paid")
	testenv.Eventually(t, 10*time.Second, "the valid events delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 10*time.Second, "three invalid_envelope dead letters", func() bool {
		return len(deadLetters(t, e, dlq.Filter{Reason: outcome.InvalidEnvelope})) == len(hostile)
	})
	if got := d.Tally.DeliveredTo("gateway"); got != len(ids) {
		t.Errorf("delivered %d, want %d", got, len(ids))
	}
}

// Issue 9.12: an id re-used with another body, without Nats-Msg-Id, is not
// silently dropped: each message is delivered.
func TestReusedIDWithAnotherBodyIsNotDropped(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	e.Start([]config.Sink{e.Sink("gateway", emulator.MetrixGateway, slugs, nil)}, []config.Route{{Sinks: []string{"gateway"}}})
	a := testenv.Track(t, "order_paid", "u1")
	b := testenv.Track(t, "signup", "u1")
	b.ID = a.ID
	for _, env := range []*envelope.Envelope{a, b} {
		raw, _ := env.Marshal()
		e.PublishRaw(e.Topo.EventSubject(env.Type), "", raw)
	}
	testenv.Eventually(t, 10*time.Second, "both delivered", func() bool { return gatewayIDs(t, e)[a.ID] == 2 })
}

// SIGTERM while the breaker is open: held events go back at once, and
// another dispatcher delivers them without waiting for ack_wait.
func TestShutdownWithOpenBreakerHandsBack(t *testing.T) {
	t.Parallel() // waits on the breaker and the next dispatcher (ack_wait 1 min), not on the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Breaker = retry.BreakerSettings{FailureThreshold: 1, OpenTimeout: time.Minute}
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 503, Count: 1})
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	long := func(c *config.Dispatcher) { c.AckWait = time.Minute }
	a := e.Start([]config.Sink{sink}, routes, long)
	ids := publishTracks(t, e, 1, "order_paid")
	testenv.Eventually(t, 5*time.Second, "breaker open", func() bool { return vendor.Count(503) == 1 })
	ids = append(ids, publishTracks(t, e, 5, "order_paid")...)
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	sink.Breaker.OpenTimeout = 300 * time.Millisecond
	sink.Retry.InitialInterval = 50 * time.Millisecond
	e.Start([]config.Sink{sink}, routes, long)
	// Well inside ack_wait (1 min): nothing was left with the stopped one.
	testenv.Eventually(t, 20*time.Second, "delivered by the next dispatcher", allDelivered(t, e, ids))
}

// Issue 9.7: an event as large as the limit allows is retried: the retry
// copy's added headers fit (the streams leave room, and start-up checks
// the server's max_payload).
func TestLargestEnvelopeIsRetried(t *testing.T) {
	t.Parallel() // waits on a retry's backoff, not on the CPU
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.Chabok)
	vendor.SetFault(emulator.Fault{Status: 503, Count: 1})
	e.Start([]config.Sink{e.Sink("chabok", emulator.Chabok, nil, nil)}, []config.Route{{Sinks: []string{"chabok"}}})
	build := func(n int) *envelope.Envelope {
		env, err := envelope.New(envelope.TypeTrack, "test", envelope.Track{
			Name: "order_paid", User: envelope.User{ID: "u1", ChabokInstallationID: "inst-u1"},
			Properties: map[string]any{"blob": strings.Repeat("x", n)},
		})
		if err != nil {
			t.Fatal(err)
		}
		return env
	}
	small, _ := build(0).Marshal()
	env := build(e.Topo.MaxEnvelopeBytes() - len(small))
	raw, _ := env.Marshal()
	if len(raw) != e.Topo.MaxEnvelopeBytes() {
		t.Fatalf("envelope of %d bytes, want exactly the limit %d", len(raw), e.Topo.MaxEnvelopeBytes())
	}
	e.PublishRaw(e.Topo.EventSubject(env.Type), env.ID, raw)
	testenv.Eventually(t, 15*time.Second, "delivered on the retry", func() bool { return vendor.Count(200) == 1 })
	if n := vendor.Count(503); n != 1 {
		t.Errorf("%d failed attempts, want 1", n)
	}
}

// More panicking events than the sink has workers: each panic gives back
// its gate slot, so the events after them are still delivered. Before,
// a panic inside Deliver kept its slot (and its keep-alive ticking) for
// the life of the process: a sink of concurrency N wedged after N panics.
func TestPanicsBeyondTheSinksConcurrencyDoNotWedgeIt(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 2
	d, m := startMisbehaving(t, e, sink)
	var bad []string
	for i := range 5 {
		env := testenv.Track(t, "order_paid", fmt.Sprintf("boom-%d", i))
		m.mu.Lock()
		m.panic[env.ID] = true
		m.mu.Unlock()
		e.Publish(env)
		bad = append(bad, env.ID)
	}
	testenv.Eventually(t, 10*time.Second, "every panic dead-lettered", func() bool {
		return len(deadLetters(t, e, dlq.Filter{Reason: outcome.HandlerPanic})) == len(bad)
	})
	ids := publishTracks(t, e, 10, "order_paid")
	testenv.Eventually(t, 10*time.Second, "the events after the panics delivered", allDelivered(t, e, ids))
	if got := d.Tally.Panics(); got != len(bad) {
		t.Errorf("%d panics counted, want %d", got, len(bad))
	}
}
