package dispatch_test

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// Review (keyed batching): a user whose requests keep failing transiently
// is retried in place, its later events behind it; other users must not
// wait for it. Two users failing (503 for their requests only), as many as
// the sink's senders (concurrency 2), then 20 healthy users' events: the
// healthy ones are delivered within seconds, not after the failing users'
// max_elapsed (20 s here).
func TestKeyedRetryInPlaceDoesNotStarveOtherUsers(t *testing.T) {
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 503, Match: "sick-"})
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 2
	sink.Batch = &config.Batch{MaxItems: 5, MaxWait: 20 * time.Millisecond}
	sink.Retry.InitialInterval, sink.Retry.MaxInterval = 200*time.Millisecond, time.Second
	sink.Retry.MaxAttempts, sink.Retry.MaxElapsed = 0, 20*time.Second
	sink.Breaker.FailureThreshold = 1000
	e.Start([]config.Sink{sink}, gatewayRoute)

	for _, u := range []string{"sick-a", "sick-b"} {
		e.Publish(testenv.Track(t, "order_paid", u))
	}
	time.Sleep(300 * time.Millisecond) // both failing users' first requests out
	var ids []string
	for i := range 20 {
		env := testenv.Track(t, "order_paid", fmt.Sprintf("well-%02d", i))
		ids = append(ids, env.ID)
		e.Publish(env)
	}
	start := time.Now()
	testenv.Eventually(t, 15*time.Second, "the 20 healthy users' events delivered", allDelivered(t, e, ids))
	t.Logf("20 healthy users delivered in %s while 2 users failed", time.Since(start).Round(time.Millisecond))
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("healthy users waited %s behind two failing ones", took)
	}
}

// Review (keyed batching): a dispatcher stopped while a user's batch waits
// out of its sender for its in-place retry, its later events behind it,
// hands them all back: the next dispatcher delivers every one, in order,
// none dead-lettered.
func TestKeyedParkedRetryIsHandedBackOnShutdown(t *testing.T) {
	t.Parallel() // waits on a 2 s retry backoff; asserts order and nothing lost
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 503, Match: "sick-"})
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 2
	sink.Batch = &config.Batch{MaxItems: 2, MaxWait: 20 * time.Millisecond}
	sink.Retry.InitialInterval, sink.Retry.MaxInterval = 2*time.Second, 2*time.Second
	sink.Retry.MaxAttempts, sink.Retry.MaxElapsed = 0, time.Minute
	sink.Breaker.FailureThreshold = 1000
	a := e.Start([]config.Sink{sink}, gatewayRoute)
	var ids []string
	for range 5 {
		env := testenv.Track(t, "order_paid", "sick-a")
		ids = append(ids, env.ID)
		e.Publish(env)
	}
	testenv.Eventually(t, 10*time.Second, "a failed request", func() bool { return len(vendor.Requests()) > 0 })
	time.Sleep(200 * time.Millisecond)
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	vendor.ClearFault()
	e.Start([]config.Sink{sink}, gatewayRoute)
	testenv.Eventually(t, 30*time.Second, "every event delivered", allDelivered(t, e, ids))
	var got []string
	for _, r := range vendor.Requests() {
		if r.Status != 200 {
			continue
		}
		var body struct{ Messages []struct{ Type, ID string } }
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatal(err)
		}
		for _, m := range body.Messages {
			if m.Type != "user" {
				got = append(got, m.ID)
			}
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Errorf("delivered %v, want %v in order", got, ids)
	}
	if dl := deadLetters(t, e, dlq.Filter{}); len(dl) > 0 {
		t.Errorf("%d dead letters", len(dl))
	}
}

// Review (keyed batching across an operator pause): events held in the
// collector's groups and in batches turned away by the shut gate wait 4×
// ack_wait (1 s) while the sink is paused; resumed, every event is
// delivered once, each user's in order, none dead-lettered.
func TestKeyedBatchHeldPastAckWaitAcrossAPause(t *testing.T) {
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 200, Latency: 300 * time.Millisecond})
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 2
	sink.Batch = &config.Batch{MaxItems: 2, MaxWait: 20 * time.Millisecond}
	a := e.Start([]config.Sink{sink}, gatewayRoute, func(d *config.Dispatcher) { d.AckWait = time.Second })
	var ids []string
	for range 4 {
		for _, u := range []string{"ua", "ub", "uc"} {
			env := testenv.Track(t, "order_paid", u)
			ids = append(ids, env.ID)
			e.Publish(env)
		}
	}
	setPaused(t, e, "gateway", true)
	testenv.Eventually(t, 5*time.Second, "paused", allPaused(true, a))
	time.Sleep(4 * time.Second)
	vendor.ClearFault()
	setPaused(t, e, "gateway", false)
	testenv.Eventually(t, 20*time.Second, "every event delivered", allDelivered(t, e, ids))
	// Counted once the dispatcher has stopped: a copy handed out again
	// waits in its group, and is sent (or not) by the time Stop returns.
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	dups := 0
	for _, n := range gatewayIDs(t, e) {
		if n > 1 {
			dups += n - 1
		}
	}
	t.Logf("%d requests, %d duplicates", len(vendor.Requests()), dups)
	if dups > 0 {
		t.Errorf("%d duplicate deliveries", dups)
	}
	if dl := deadLetters(t, e, dlq.Filter{}); len(dl) > 0 {
		t.Errorf("%d dead letters", len(dl))
	}
}
