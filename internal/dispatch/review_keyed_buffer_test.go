package dispatch_test

// Review of 49d4b8d (the keyed collector's input buffered, 256 events, and
// its settled batches handed back without waiting): what waits in the
// buffer while the collector holds all it may (held >= hold, in = nil)
// must stay this process's past ack_wait, in each key's order, and be
// delivered or handed back at shutdown, none lost, none stuck.
//
// These run the batcher with a max_ack_pending just above the pull's and
// the workers' share, so hold is a few events and most of what the server
// hands over waits for the collector: in its input buffer, its early
// tickets, or (before 49d4b8d) the pull's.

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// bufferScenario publishes perUser events for each of users, interleaved,
// and returns their ids in publish order, all and per user.
func bufferScenario(t *testing.T, e *testenv.Env, users []string, perUser int) (ids []string, order map[string][]string) {
	t.Helper()
	order = map[string][]string{}
	for range perUser {
		for _, u := range users {
			env := testenv.Track(t, "order_paid", u)
			ids = append(ids, env.ID)
			order[u] = append(order[u], env.ID)
			e.Publish(env)
		}
	}
	return ids, order
}

// ackPending is what the sink's consumer has handed out unacked once it
// has handed out everything (else -1).
func ackPending(t *testing.T, e *testenv.Env) int {
	t.Helper()
	ctx := context.Background()
	cons, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return -1
	}
	if info.NumPending > 0 {
		return -1
	}
	return info.NumAckPending
}

// ackPendingOf is what the sink's consumer has handed out unacked.
func ackPendingOf(t *testing.T, e *testenv.Env) int {
	t.Helper()
	ctx := context.Background()
	cons, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return -1
	}
	return info.NumAckPending
}

// Review (buffered input, DUPLICATES, ORDER, and a WEDGE at
// max_ack_pending): 4 workers parse in parallel, so tickets reach the
// buffer out of order; max_ack_pending 40 leaves the collector a hold of
// 4 (40 - 32 prefetch - 4 workers), so with 60 events published the
// server stops at 40 in our hands, about 30 of them waiting for the
// collector, for seconds behind a vendor taking 400 ms a request
// (ack_wait 1 s). Every event delivered once, each user's in publish
// order, none dead-lettered.
func TestKeyedBatchBufferedPastAckWaitEachOnceInOrder(t *testing.T) {
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 200, Latency: 400 * time.Millisecond})
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 4
	sink.MaxAckPending = 40
	sink.Timeout = 5 * time.Second
	sink.Batch = &config.Batch{MaxItems: 2, MaxWait: 20 * time.Millisecond}
	d := e.Start([]config.Sink{sink}, gatewayRoute, func(d *config.Dispatcher) { d.AckWait, d.ShutdownGrace = time.Second, 10*time.Second })

	ids, order := bufferScenario(t, e, []string{"buf-a", "buf-b", "buf-c"}, 20)
	most := 0
	testenv.Eventually(t, 10*time.Second, "max_ack_pending reached, most waiting for the collector", func() bool {
		most = max(most, ackPendingOf(t, e))
		return most >= 38
	})
	testenv.Eventually(t, 30*time.Second, "every event delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 10*time.Second, "the consumer idle", func() bool { return e.Idle("gateway") })
	// Counted once the dispatcher has stopped: a copy handed out again
	// waits in its group, and is sent by the time Stop returns.
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	delivered := gatewayOrder(t, e)
	for u, want := range order {
		if got := delivered[u]; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("user %s: delivered\n %v\nwant (publish order, each once)\n %v", u, got, want)
		}
	}
	if dl := deadLetters(t, e, dlq.Filter{}); len(dl) > 0 {
		t.Errorf("%d dead letters", len(dl))
	}
	t.Logf("%d requests, at most %d ack pending", len(vendor.Requests()), most)
}

// Review (buffered input, WEDGE and LOSS at shutdown): a dispatcher stopped
// while about 27 events wait for a collector that holds all it may (hold
// 3: 36 - 32 - 1), behind one sender and a vendor taking 600 ms a request,
// with a shutdown_grace of 1 s: Stop returns (the collector drains the
// buffer after the grace, its senders handing back), and the next
// dispatcher delivers every event, each user's in order, none
// dead-lettered.
func TestKeyedBatchBufferedEventsHandedBackAtShutdown(t *testing.T) {
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 200, Latency: 600 * time.Millisecond})
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 1
	sink.MaxAckPending = 36
	sink.Timeout = 5 * time.Second
	sink.Batch = &config.Batch{MaxItems: 2, MaxWait: 20 * time.Millisecond}
	opts := func(d *config.Dispatcher) { d.AckWait, d.ShutdownGrace = time.Second, time.Second }
	a := e.Start([]config.Sink{sink}, gatewayRoute, opts)

	ids, order := bufferScenario(t, e, []string{"stop-a", "stop-b", "stop-c"}, 10)
	testenv.Eventually(t, 10*time.Second, "every event pulled, a request out", func() bool {
		return ackPending(t, e) >= len(ids)-4 && len(vendor.Requests()) > 0
	})
	stopped := make(chan error, 1)
	start := time.Now()
	go func() { stopped <- a.Stop() }()
	select {
	case err := <-stopped:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a did not stop within 20 s: the keyed collector or its senders wedged")
	}
	t.Logf("a stopped in %s having delivered %d", time.Since(start).Round(time.Millisecond), a.Tally.DeliveredTo("gateway"))
	vendor.ClearFault()
	e.Start([]config.Sink{sink}, gatewayRoute, opts)
	testenv.Eventually(t, 30*time.Second, "every event delivered", allDelivered(t, e, ids))
	delivered := firstOrder(gatewayOrder(t, e))
	for u, want := range order {
		if got := delivered[u]; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("user %s: first delivered\n %v\nwant (publish order)\n %v", u, got, want)
		}
	}
	if dl := deadLetters(t, e, dlq.Filter{}); len(dl) > 0 {
		t.Errorf("%d dead letters", len(dl))
	}
}

// Review (buffered input, in-place retries with the hold reached): a user
// whose requests fail (503) is retried in place, its batch counted in
// held, while the other users' events fill the buffer behind a hold of 3;
// once the vendor recovers every event is delivered once, each user's in
// order, none dead-lettered: no wedge between the parked batch, the full
// buffer and the buffered done.
func TestKeyedBatchBufferedBehindAnInPlaceRetry(t *testing.T) {
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 503, Match: "sick-"})
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 1
	sink.MaxAckPending = 36
	sink.Batch = &config.Batch{MaxItems: 2, MaxWait: 20 * time.Millisecond}
	sink.Retry.InitialInterval, sink.Retry.MaxInterval = 200*time.Millisecond, 500*time.Millisecond
	sink.Retry.MaxAttempts, sink.Retry.MaxElapsed = 0, time.Minute
	sink.Breaker.FailureThreshold = 1000
	d := e.Start([]config.Sink{sink}, gatewayRoute, func(d *config.Dispatcher) { d.AckWait = time.Second })

	users := []string{"sick-a", "well-b", "well-c", "well-d"}
	ids, order := bufferScenario(t, e, users, 7)
	// Held past ack_wait (1 s) behind the retry: eight failures at
	// least 200 ms apart, the later ones 500 ms.
	testenv.Eventually(t, 20*time.Second, "sick-a retried past ack_wait", func() bool {
		return vendor.Count(503) >= 8
	})
	vendor.ClearFault()
	testenv.Eventually(t, 30*time.Second, "every event delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 10*time.Second, "the consumer idle", func() bool { return e.Idle("gateway") })
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	delivered := gatewayOrder(t, e)
	for u, want := range order {
		if got := delivered[u]; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("user %s: delivered\n %v\nwant (publish order, each once)\n %v", u, got, want)
		}
	}
	if dl := deadLetters(t, e, dlq.Filter{}); len(dl) > 0 {
		t.Errorf("%d dead letters", len(dl))
	}
}

// One user whose requests keep failing (a transient error for its own
// payload, 503, the breaker not opened by it) must not stop the others:
// its batch is retried in place and holds no sender
// (TestKeyedRetryInPlaceDoesNotStarveOtherUsers), but its later events
// wait behind it in the collector's hold, and with more of them stored
// than max_ack_pending leaves room for, the server hands this dispatcher
// nothing else: every other user waits until the failing user's retries
// end (retry.max_elapsed, 24 h by default). Found in the review of
// 49d4b8d (by reading; not a regression: the workers blocked the same way
// before), red here: the other users' 10 events not delivered in 20 s.
func TestKeyedBatchAFailingUserDoesNotStopTheOthers(t *testing.T) {
	t.Skip("DEFECT (known, documented in docs/sinks.md): a user whose requests keep failing holds its later events in the keyed " +
		"collector; once they fill what max_ack_pending leaves, no other user's event is pulled until its retries end " +
		"(retry.max_elapsed). A fix must hand the user's later events back to the server and take them again in stream order")
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 503, Match: "sick-"})
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 2
	sink.MaxAckPending = 40
	sink.Batch = &config.Batch{MaxItems: 5, MaxWait: 20 * time.Millisecond}
	sink.Retry.InitialInterval, sink.Retry.MaxInterval = 200*time.Millisecond, 500*time.Millisecond
	sink.Retry.MaxAttempts, sink.Retry.MaxElapsed = 0, 10*time.Minute
	sink.Breaker.FailureThreshold = 1000
	e.Start([]config.Sink{sink}, gatewayRoute)
	bufferScenario(t, e, []string{"sick-a"}, 60) // more than the hold of 40 less the pull's and the workers' share
	testenv.Eventually(t, 10*time.Second, "sick-a failing", func() bool { return vendor.Count(503) >= 2 })
	well, _ := bufferScenario(t, e, []string{"well-b", "well-c"}, 5)
	testenv.Eventually(t, 20*time.Second, "the other users' events delivered while sick-a fails", allDelivered(t, e, well))
}
