package dispatch_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// writeOriginless stores a dead letter of env for sink as a tool, or a
// version before origins were carried, would: no origin.
func writeOriginless(t *testing.T, e *testenv.Env, sink string, env *envelope.Envelope) {
	t.Helper()
	raw, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rec := &dlq.Record{
		Sink: sink, Reason: outcome.VendorRejected, Status: 400, Code: "BAD_REQUEST", Attempts: 1,
		FirstAttempt: now, LastAttempt: now, EventID: env.ID, EventType: env.Type,
		Subject: e.Topo.EventSubjectFor(env.Type, env.PartitionKey()), Header: nats.Header{}, Data: raw,
	}
	if _, err := dlq.NewWriter(e.JS, e.Topo).Write(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
}

// Dead letters without an origin, replayed, and each failing once more:
// both retries are scheduled and both events delivered. They shared one
// retry subject before, and the server keeps one schedule per subject, so
// the second retry replaced the first and one event was lost.
func TestRetriesOfOriginlessReplaysAreKeptApart(t *testing.T) {
	t.Parallel() // waits on retries' backoffs, not the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	// Both retries wait long enough to be scheduled side by side.
	sink.Retry.InitialInterval, sink.Retry.MaxInterval = time.Second, 2*time.Second
	sink.Breaker.FailureThreshold = 1000
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 503, Count: 2})
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}})
	var ids []string
	for _, user := range []string{"u1", "u2"} {
		env := testenv.Track(t, "order_paid", user)
		writeOriginless(t, e, "gateway", env)
		ids = append(ids, env.ID)
	}
	res, err := dlq.NewStore(e.JS, e.Topo).Replay(context.Background(), dlq.Filter{}, dlq.ReplayOptions{})
	if err != nil || res.Replayed != 2 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	testenv.Eventually(t, 10*time.Second, "both failed once", func() bool { return vendor.Count(503) == 2 })
	testenv.Eventually(t, 15*time.Second, "both delivered after their retry", allDelivered(t, e, ids))
	testenv.Eventually(t, 5*time.Second, "nothing left", func() bool { return e.Idle("gateway") })
	for id, n := range gatewayIDs(t, e) {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
}

// While the retries stream cannot be written, an event's attempts still
// end as its policy says: the message is kept in hand and retried in
// place, and with max_attempts 2 the vendor sees exactly two requests and
// the event is dead-lettered retries_exhausted. Before, the message was
// handed back uncounted (its count travels in the retry copy that could
// not be stored), so it was tried again and again and never dead-lettered.
func TestRetriesStreamDownAttemptsStillEndPerPolicy(t *testing.T) {
	t.Parallel() // waits on retries' backoffs; counts attempts, not time
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Retry.MaxAttempts = 2
	sink.Breaker.FailureThreshold = 1000 // keep the breaker out of it
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 500, Code: "INTERNAL"})
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}})
	ctx := context.Background()
	if err := e.JS.DeleteStream(ctx, e.Topo.RetriesStream()); err != nil {
		t.Fatal(err)
	}
	ids := publishTracks(t, e, 1, "order_paid")
	var recs []*dlq.Record
	testenv.Eventually(t, 10*time.Second, "retries_exhausted", func() bool {
		recs = deadLetters(t, e, dlq.Filter{})
		return len(recs) == 1
	})
	r := recs[0]
	if r.EventID != ids[0] || r.Reason != outcome.RetriesExhausted || r.Status != 500 || r.Code != "INTERNAL" || r.Attempts != 2 {
		t.Errorf("record %+v", r)
	}
	cons, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "the event acked", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 0 && info.NumPending == 0
	})
	if n := vendor.Count(0); n != 2 {
		t.Errorf("vendor saw %d requests, want 2 (max_attempts)", n)
	}
}

// chabokTimes returns the eventTime (ms) of each track request the Chabok
// emulator answered with status (0: any), in order.
func chabokTimes(t *testing.T, e *testenv.Env, status int) []int64 {
	t.Helper()
	var out []int64
	for _, r := range e.Emu.Vendor(emulator.Chabok).Requests() {
		if status != 0 && r.Status != status {
			continue
		}
		var body struct {
			EventTime int64 `json:"eventTime"`
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatal(err)
		}
		out = append(out, body.EventTime)
	}
	return out
}

// An envelope without `time` is sent with the time Chapar received it. A
// replay of its dead letter must send that time again, not the replay's:
// before, the replay entered the retries stream as a new message and took
// its receipt time from there.
func TestReplayKeepsTheFirstReceiptTime(t *testing.T) {
	t.Parallel() // waits on a replay; compares the times it sends, not how long it took
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.Chabok)
	vendor.SetFault(emulator.Fault{Status: 400, Code: "INVALID_EVENT", Count: 1})
	e.Start([]config.Sink{e.Sink("chabok", emulator.Chabok, nil, nil)}, []config.Route{{Sinks: []string{"chabok"}}})
	e.Publish(testenv.Track(t, "order_paid", "u1")) // no time: the receipt time stands for it
	testenv.Eventually(t, 10*time.Second, "dead letter", func() bool { return len(deadLetters(t, e, dlq.Filter{})) == 1 })
	// The first attempt was sent with the receipt time.
	first := chabokTimes(t, e, 400)
	if len(first) != 1 {
		t.Fatalf("%d rejected requests, want 1", len(first))
	}
	received := first[0]
	// The replay is well after the receipt, whatever the clock's grain.
	testenv.Eventually(t, 5*time.Second, "time to pass", func() bool { return time.Now().UnixMilli() > received+50 })
	if res, err := dlq.NewStore(e.JS, e.Topo).Replay(context.Background(), dlq.Filter{}, dlq.ReplayOptions{}); err != nil || res.Replayed != 1 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	var times []int64
	testenv.Eventually(t, 10*time.Second, "the replay delivered", func() bool {
		times = chabokTimes(t, e, 200)
		return len(times) == 1
	})
	if times[0] != received {
		t.Errorf("the replay sent eventTime %d, %d ms after the event was received (%d)", times[0], times[0]-received, received)
	}
}

// refuseRetries makes the retries stream refuse retry copies (their wait
// subjects leave its subjects, so a publish finds no stream), leaving its
// due subjects and consumers as they are; the returned func restores it.
func refuseRetries(t *testing.T, e *testenv.Env) (restore func()) {
	t.Helper()
	ctx := context.Background()
	s, err := e.JS.Stream(ctx, e.Topo.RetriesStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cfg := info.Config
	narrowed := cfg
	narrowed.Subjects = []string{e.Topo.Prefix() + ".retry.due.>"}
	if _, err := e.JS.UpdateStream(ctx, narrowed); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if _, err := e.JS.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
}

// Retried in place while the retries stream refuses copies, an event
// moves to the stream as soon as it takes them again (the next failure's
// copy is stored), and is delivered once from there.
func TestRetriesStreamBackTakesTheRetryInPlace(t *testing.T) {
	t.Parallel() // waits on retries' backoffs and the retries stream, not the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Retry.MaxAttempts = 1000
	sink.Breaker.FailureThreshold = 1000
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 500, Code: "INTERNAL"})
	d := e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}})
	restore := refuseRetries(t, e)
	ids := publishTracks(t, e, 1, "order_paid")
	testenv.Eventually(t, 10*time.Second, "retried in place", func() bool { return vendor.Count(500) >= 3 })
	restore()
	ctx := context.Background()
	retries, err := e.JS.Consumer(ctx, e.Topo.RetriesStream(), topology.RetryConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "a retry taken from the stream", func() bool {
		info, err := retries.Info(ctx)
		return err == nil && info.Delivered.Consumer > 0
	})
	vendor.ClearFault()
	testenv.Eventually(t, 10*time.Second, "delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 5*time.Second, "nothing left", func() bool { return e.Idle("gateway") })
	if n := gatewayIDs(t, e)[ids[0]]; n != 1 || d.Tally.DeliveredTo("gateway") != 1 {
		t.Errorf("delivered %d times (tally %d)", n, d.Tally.DeliveredTo("gateway"))
	}
	if recs := deadLetters(t, e, dlq.Filter{}); len(recs) != 0 {
		t.Errorf("dead-lettered: %+v", recs[0])
	}
}

// A shutdown while an event is retried in place hands it back: the next
// dispatcher delivers it.
func TestShutdownHandsBackARetryInPlace(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Retry.MaxAttempts = 1000
	sink.Breaker.FailureThreshold = 1000
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 500, Code: "INTERNAL"})
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	first := e.Start([]config.Sink{sink}, routes)
	restore := refuseRetries(t, e)
	ids := publishTracks(t, e, 1, "order_paid")
	testenv.Eventually(t, 10*time.Second, "retried in place", func() bool { return vendor.Count(500) >= 2 })
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	restore()
	vendor.ClearFault()
	e.Start([]config.Sink{sink}, routes)
	testenv.Eventually(t, 10*time.Second, "delivered by the next dispatcher", allDelivered(t, e, ids))
	testenv.Eventually(t, 5*time.Second, "nothing left", func() bool { return e.Idle("gateway") })
	if n := gatewayIDs(t, e)[ids[0]]; n != 1 {
		t.Errorf("delivered %d times", n)
	}
}

// latencies is a Tally that keeps each delivery's publish-to-vendor latency.
type latencies struct {
	*dispatch.Tally
	mu  sync.Mutex
	all []time.Duration
}

func (l *latencies) Delivered(sink string, d time.Duration) {
	l.mu.Lock()
	l.all = append(l.all, d)
	l.mu.Unlock()
	l.Tally.Delivered(sink, d)
}

func (l *latencies) get() []time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.all)
}

// A replay keeps the event's receipt time for the vendor, but its
// delivery latency counts from the replay: a replay of an old dead letter
// is not that old a delivery on the latency histogram.
func TestReplayLatencyCountsFromTheReplay(t *testing.T) {
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.Chabok)
	vendor.SetFault(emulator.Fault{Status: 400, Code: "INVALID_EVENT", Count: 1})
	obs := &latencies{Tally: dispatch.NewTally()}
	_, js := e.Connect()
	ready := make(chan struct{})
	d, err := dispatch.New(e.Config([]config.Sink{e.Sink("chabok", emulator.Chabok, nil, nil)}, []config.Route{{Sinks: []string{"chabok"}}}),
		dispatch.Options{Observer: obs, Logger: e.Log, Ready: func() { close(ready) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, js) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("dispatcher did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("dispatcher did not start in 30s")
	}
	published := time.Now()
	e.Publish(testenv.Track(t, "order_paid", "u1"))
	testenv.Eventually(t, 10*time.Second, "dead letter", func() bool { return len(deadLetters(t, e, dlq.Filter{})) == 1 })
	const gap = 2 * time.Second
	testenv.Eventually(t, 5*time.Second, "the dead letter to age", func() bool { return time.Since(published) > gap })
	if res, err := dlq.NewStore(e.JS, e.Topo).Replay(context.Background(), dlq.Filter{}, dlq.ReplayOptions{}); err != nil || res.Replayed != 1 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	testenv.Eventually(t, 10*time.Second, "the replay delivered", func() bool { return len(obs.get()) == 1 })
	if got := obs.get()[0]; got >= gap {
		t.Errorf("the replay's latency is %s, counted from the event's first receipt, not the replay", got)
	}
}
