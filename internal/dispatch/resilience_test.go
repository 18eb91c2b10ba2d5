package dispatch_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

func publishTracks(t *testing.T, e *testenv.Env, n int, name string) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		env := testenv.Track(t, name, fmt.Sprintf("user-%d", i))
		ids[i] = env.ID
		e.Publish(env)
	}
	return ids
}

func allDelivered(t *testing.T, e *testenv.Env, ids []string) func() bool {
	return func() bool {
		got := gatewayIDs(t, e)
		for _, id := range ids {
			if got[id] == 0 {
				return false
			}
		}
		return true
	}
}

func deadLetters(t *testing.T, e *testenv.Env, f dlq.Filter) []*dlq.Record {
	t.Helper()
	recs, err := dlq.NewStore(e.JS, e.Topo).List(context.Background(), f, 0)
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// A vendor down far longer than the retry policy's attempts would last:
// the breaker stops the sink pulling, so nothing is dead-lettered, the
// requests to the dead vendor are bounded by the probes, and everything is
// delivered once it recovers.
func TestOutageDeadLettersNothingAndBreakerBoundsRequests(t *testing.T) {
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Retry.MaxAttempts = 3 // counted attempts would run out in about a second
	sink.Breaker = retry.BreakerSettings{FailureThreshold: 3, OpenTimeout: 300 * time.Millisecond}
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 503})
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}})
	ids := publishTracks(t, e, 20, "order_paid")
	const outage = 4 * time.Second
	time.Sleep(outage)
	during := vendor.Count(0)
	vendor.ClearFault()
	testenv.Eventually(t, 20*time.Second, "every event delivered after recovery", allDelivered(t, e, ids))
	if recs := deadLetters(t, e, dlq.Filter{}); len(recs) != 0 {
		t.Fatalf("an outage dead-lettered %d events: %+v", len(recs), recs[0])
	}
	// Bound: the failures that open it, what the other workers had in
	// flight then, and one probe per open period.
	bound := int(sink.Breaker.FailureThreshold) + sink.Concurrency + int(outage/sink.Breaker.OpenTimeout) + 1
	t.Logf("requests to the dead vendor in %s: %d (bound %d; 20 events × 3 attempts without a breaker)", outage, during, bound)
	if during > bound {
		t.Errorf("%d requests reached the dead vendor; the breaker should bound them to %d", during, bound)
	}
}

func TestRetryAfterIsHonoured(t *testing.T) {
	t.Parallel() // waits out Retry-After; a loaded machine only sends later, which the lower bound allows
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 429, RetryAfter: "2", Count: 1})
	// One worker: with more, requests already in flight when the 429
	// arrives reach the vendor before Chapar could know (they are not new
	// requests; every request started after the 429 waits).
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 1
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}})
	ids := publishTracks(t, e, 8, "order_paid")
	testenv.Eventually(t, 15*time.Second, "delivered after the wait", allDelivered(t, e, ids))
	reqs := vendor.Requests()
	var throttled time.Time
	for _, r := range reqs {
		if r.Status == 429 {
			throttled = r.At
			continue
		}
		if !throttled.IsZero() && r.At.Before(throttled.Add(2*time.Second)) {
			t.Errorf("request %s after the 429; Retry-After asked for 2s", r.At.Sub(throttled))
		}
	}
	if throttled.IsZero() {
		t.Fatal("no 429 was served")
	}
}

func TestRetriesExhaustedAfterTheLimit(t *testing.T) {
	t.Parallel() // waits on retries' backoffs; counts attempts, not time
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Retry.MaxAttempts = 3
	sink.Breaker.FailureThreshold = 1000 // keep the breaker out of it
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 500, Code: "INTERNAL"})
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}})
	publishTracks(t, e, 1, "order_paid")
	var recs []*dlq.Record
	testenv.Eventually(t, 10*time.Second, "retries_exhausted", func() bool {
		recs = deadLetters(t, e, dlq.Filter{})
		return len(recs) == 1
	})
	r := recs[0]
	if r.Reason != "retries_exhausted" || r.Status != 500 || r.Code != "INTERNAL" || r.Attempts != 3 {
		t.Errorf("record %+v", r)
	}
	if n := vendor.Count(0); n != 3 {
		t.Errorf("%d attempts, want 3", n)
	}
}

func TestRetrySurvivesRestartMidBackoff(t *testing.T) {
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Retry.InitialInterval = 1500 * time.Millisecond
	sink.Retry.MaxInterval = 3 * time.Second
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 503, Count: 1})
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	first := e.Start([]config.Sink{sink}, routes)
	ids := publishTracks(t, e, 1, "order_paid")
	testenv.Eventually(t, 5*time.Second, "the first attempt failed", func() bool { return vendor.Count(503) == 1 })
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := gatewayIDs(t, e); len(got) != 0 {
		t.Fatalf("delivered before the backoff: %v", got)
	}
	second := e.Start([]config.Sink{sink}, routes)
	testenv.Eventually(t, 10*time.Second, "the retry, by the new instance", allDelivered(t, e, ids))
	testenv.Eventually(t, 5*time.Second, "the new instance's ack", func() bool { return consumerIdle(t, e, "gateway") })
	if second.Tally.DeliveredTo("gateway") != 1 || vendor.Count(0) != 2 {
		t.Errorf("second delivered %d; vendor saw %d requests, want 2", second.Tally.DeliveredTo("gateway"), vendor.Count(0))
	}
}

// Each documented Metrix error: one attempt, dead-lettered with status and
// code; once the cause is fixed, replay delivers each once, to the failed
// sink only.
func TestPermanentErrorsThenReplayDeliversOnce(t *testing.T) {
	t.Parallel() // waits on replays and the vendor, not on the CPU
	e := testenv.New(t)
	d := e.Start([]config.Sink{e.Sink("chabok", emulator.Chabok, nil, nil), e.Sink("gateway", emulator.MetrixGateway, slugs, nil)},
		[]config.Route{{Sinks: []string{"chabok", "gateway"}}})
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	cases := []struct {
		status int
		code   string
	}{{400, "BAD_REQUEST"}, {403, "S2S_FEATURE_NOT_AVAILABLE"}, {403, "INVALID_PARAMETERS"}, {404, "EVENT_TYPE_DOES_NOT_EXIST"}}
	var ids []string
	for i, c := range cases {
		vendor.SetFault(emulator.Fault{Status: c.status, Code: c.code, Count: 1})
		ids = append(ids, publishTracks(t, e, 1, "order_paid")...)
		testenv.Eventually(t, 10*time.Second, c.code+" dead-lettered", func() bool {
			return len(deadLetters(t, e, dlq.Filter{Sink: "gateway"})) == i+1
		})
		recs := deadLetters(t, e, dlq.Filter{Code: c.code, Status: c.status, EventID: ids[i]})
		if len(recs) != 1 || recs[0].Attempts != 1 || recs[0].Reason != "vendor_rejected" {
			t.Fatalf("%s: %+v", c.code, recs)
		}
	}
	testenv.Eventually(t, 5*time.Second, "chabok delivered all", func() bool { return d.Tally.DeliveredTo("chabok") == len(cases) })
	if n := vendor.Count(0); n != len(cases) {
		t.Fatalf("%d requests for %d permanent errors: each must be tried once", n, len(cases))
	}
	// The cause is fixed (the faults were one-shot); replay.
	res, err := dlq.NewStore(e.JS, e.Topo).Replay(context.Background(), dlq.Filter{Sink: "gateway"}, dlq.ReplayOptions{})
	if err != nil || res.Replayed != len(cases) {
		t.Fatalf("replay: %+v %v", res, err)
	}
	testenv.Eventually(t, 10*time.Second, "replayed events delivered", allDelivered(t, e, ids))
	time.Sleep(200 * time.Millisecond)
	for id, n := range gatewayIDs(t, e) {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
	if n := e.Emu.Vendor(emulator.Chabok).Count(0); n != len(cases) {
		t.Errorf("replay re-sent to chabok: %d requests for %d events", n, len(cases))
	}
	if recs := deadLetters(t, e, dlq.Filter{}); len(recs) != 0 {
		t.Errorf("%d dead letters left after replay", len(recs))
	}
}

// A replay interrupted after it published some entries but before it
// removed them, then run again: every entry delivered once, the stream empty.
func TestInterruptedReplayRunAgainDeliversOnce(t *testing.T) {
	t.Parallel() // waits on replays and the vendor, not on the CPU
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 404, Code: "EVENT_TYPE_DOES_NOT_EXIST", Count: 10})
	d := e.Start([]config.Sink{e.Sink("gateway", emulator.MetrixGateway, slugs, nil)}, []config.Route{{Sinks: []string{"gateway"}}})
	ids := publishTracks(t, e, 10, "order_paid")
	testenv.Eventually(t, 10*time.Second, "ten dead letters", func() bool { return len(deadLetters(t, e, dlq.Filter{})) == 10 })

	// Stop the dispatcher so the first run's replays stay queued, and cut
	// the first run off at the fourth entry's removal by cancelling its
	// context from the progress callback.
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	store := dlq.NewStore(e.JS, e.Topo)
	ctx, cancel := context.WithCancel(context.Background())
	res, err := store.Replay(ctx, dlq.Filter{}, dlq.ReplayOptions{Progress: func(n int) {
		if n == 4 {
			cancel()
		}
	}})
	if err == nil {
		t.Fatalf("the interrupted replay did not stop: %+v", res)
	}
	if left := len(deadLetters(t, e, dlq.Filter{})); left == 0 || left == 10 {
		t.Fatalf("%d entries left; the test needs a replay cut off halfway", left)
	}
	// The worst case: a run that died after queueing the next entry's
	// replay but before removing the entry.
	next := deadLetters(t, e, dlq.Filter{})[0]
	if err := store.Requeue(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	res, err = store.Replay(context.Background(), dlq.Filter{}, dlq.ReplayOptions{})
	if err != nil || res.Replayed != res.Matched {
		t.Fatalf("second run: %+v %v", res, err)
	}
	e.Start([]config.Sink{e.Sink("gateway", emulator.MetrixGateway, slugs, nil)}, []config.Route{{Sinks: []string{"gateway"}}})
	testenv.Eventually(t, 10*time.Second, "all ten delivered", allDelivered(t, e, ids))
	time.Sleep(300 * time.Millisecond)
	for id, n := range gatewayIDs(t, e) {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
	if left := len(deadLetters(t, e, dlq.Filter{})); left != 0 {
		t.Errorf("%d entries left in the dead-letter stream", left)
	}
}

// While the breaker is open nothing is fetched and nothing held is
// redelivered: a long outage burns no deliveries, even past ack_wait.
func TestOpenBreakerFetchesNothingAndHeldMessagesStayAlive(t *testing.T) {
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 2
	sink.Timeout = 500 * time.Millisecond
	sink.Breaker = retry.BreakerSettings{FailureThreshold: 2, OpenTimeout: time.Minute}
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 503})
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}}, func(c *config.Dispatcher) { c.AckWait = time.Second })
	publishTracks(t, e, 10, "order_paid")
	testenv.Eventually(t, 5*time.Second, "breaker open", func() bool { return vendor.Count(503) >= 2 })
	cons, err := e.JS.Consumer(context.Background(), e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // let in-flight fetches settle
	before, _ := cons.Info(context.Background())
	time.Sleep(3500 * time.Millisecond) // more than three ack_waits
	after, _ := cons.Info(context.Background())
	if after.Delivered.Consumer != before.Delivered.Consumer {
		t.Errorf("%d deliveries while the breaker was open (redeliveries of held or buffered messages)",
			after.Delivered.Consumer-before.Delivered.Consumer)
	}
	if n := vendor.Count(0); n > 2+sink.Concurrency {
		t.Errorf("%d requests to a vendor whose breaker is open", n)
	}
}

// A dead letter that cannot be written keeps the event, and the verdict:
// the event is held (not handed back, so the vendor is not called again
// for an event it rejected) and dead-lettered once the stream is back.
func TestFailedDeadLetterWriteLosesNothing(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.New(t)
	// A short ack_wait, so the hold outlives several; not shorter than
	// 2 s, since a keep-alive (every ack_wait/3) delayed by more than two
	// of its periods on a loaded machine lets the server redeliver.
	const ackWait = 2 * time.Second
	d := e.Start([]config.Sink{e.Sink("gateway", emulator.MetrixGateway, slugs, nil)}, []config.Route{{Sinks: []string{"gateway"}}},
		func(c *config.Dispatcher) { c.AckWait = ackWait })
	ctx := context.Background()
	if err := e.JS.DeleteStream(ctx, e.Topo.DeadLetterStream()); err != nil {
		t.Fatal(err)
	}
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 400, Code: "BAD_REQUEST"})
	ids := publishTracks(t, e, 1, "order_paid")
	testenv.Eventually(t, 5*time.Second, "the rejection", func() bool { return vendor.Count(400) >= 1 })
	// Several ack_waits pass while the dead letter cannot be written.
	cons, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 15*time.Second, "two ack_waits of holding", func() bool {
		info, err := cons.Info(ctx)
		return err == nil && info.NumAckPending == 1 && time.Since(vendor.Requests()[0].At) > 2*ackWait
	})
	// Held, not acked (the stream keeps it either way: limits retention).
	if info, err := cons.Info(ctx); err != nil || info.AckFloor.Stream != 0 {
		t.Fatalf("the event was acked although its dead letter was not written (%v)", err)
	}
	if err := e.Topo.Ensure(ctx, e.JS); err != nil {
		t.Fatal(err)
	}
	var recs []*dlq.Record
	testenv.Eventually(t, 15*time.Second, "dead letter written once the stream is back", func() bool {
		recs = deadLetters(t, e, dlq.Filter{})
		return len(recs) == 1
	})
	if recs[0].EventID != ids[0] || recs[0].Code != "BAD_REQUEST" || recs[0].Attempts != 1 {
		t.Errorf("record %+v", recs[0])
	}
	if n := vendor.Count(0); n != 1 {
		t.Errorf("vendor called %d times for one permanently rejected event", n)
	}
	testenv.Eventually(t, 5*time.Second, "nothing left", func() bool { return consumerIdle(t, e, "gateway") })
	if got := d.Tally.DeliveredTo("gateway"); got != 0 {
		t.Errorf("%d delivered", got)
	}
}

// A vendor slower than ack_wait: heartbeats keep the event with the
// replica that is waiting on the vendor, so it is sent once, not twice.
func TestSlowVendorBeyondAckWaitIsSentOnce(t *testing.T) {
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Timeout = 5 * time.Second
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 200, Latency: 2500 * time.Millisecond, Count: 1})
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	oneSecond := func(c *config.Dispatcher) { c.AckWait = time.Second }
	a := e.Start([]config.Sink{sink}, routes, oneSecond)
	b := e.Start([]config.Sink{sink}, routes, oneSecond)
	ids := publishTracks(t, e, 1, "order_paid")
	testenv.Eventually(t, 10*time.Second, "delivered", allDelivered(t, e, ids))
	time.Sleep(1500 * time.Millisecond)
	if n := vendor.Count(0); n != 1 {
		t.Errorf("vendor got %d requests for one event slower than ack_wait", n)
	}
	if got := a.Tally.DeliveredTo("gateway") + b.Tally.DeliveredTo("gateway"); got != 1 {
		t.Errorf("%d deliveries counted", got)
	}
}

// A replay that fails again is recorded again, with its replay count.
func TestReplayThatFailsAgainRecordsTheCount(t *testing.T) {
	t.Parallel() // waits on replays and the vendor, not on the CPU
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 403, Code: "INVALID_PARAMETERS", Count: 2})
	e.Start([]config.Sink{e.Sink("gateway", emulator.MetrixGateway, slugs, nil)}, []config.Route{{Sinks: []string{"gateway"}}})
	ids := publishTracks(t, e, 1, "order_paid")
	testenv.Eventually(t, 5*time.Second, "dead letter", func() bool { return len(deadLetters(t, e, dlq.Filter{})) == 1 })
	store := dlq.NewStore(e.JS, e.Topo)
	if _, err := store.Replay(context.Background(), dlq.Filter{}, dlq.ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	var recs []*dlq.Record
	testenv.Eventually(t, 5*time.Second, "dead letter again", func() bool {
		recs = deadLetters(t, e, dlq.Filter{})
		return len(recs) == 1 && recs[0].Replays == 1
	})
	if recs[0].EventID != ids[0] || vendor.Count(0) != 2 {
		t.Errorf("record %+v after %d requests", recs[0], vendor.Count(0))
	}
	if _, err := store.Replay(context.Background(), dlq.Filter{}, dlq.ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "second replay delivered", allDelivered(t, e, ids))
}
