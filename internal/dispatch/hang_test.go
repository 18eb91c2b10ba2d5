package dispatch_test

// A vendor that does not answer in time is a failure, not Chapar's own
// shutdown (issue 18): an attempt is charged, the breaker counts it,
// max_attempts ends in a dead letter, a batch isolates the item that
// hangs, and an ordered key's head that hangs releases its barrier by the
// same policy. Against the real embedded JetStream and the emulator,
// whose injected Latency outlasts the sink's timeout.

import (
	"strings"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// hang is a fault that holds the response far past the sink's timeout.
func hang(match string) emulator.Fault {
	return emulator.Fault{Status: 200, Latency: time.Minute, Match: match}
}

// timingOut is a sink whose vendor calls give up after 200 ms, with
// max_attempts 3 and the breaker kept out of it.
func timingOut(s config.Sink) config.Sink {
	s.Timeout = 200 * time.Millisecond
	s.Retry.MaxAttempts = 3
	s.Breaker.FailureThreshold = 1000
	return s
}

// One event makes the vendor hang: it gets exactly max_attempts requests
// and a retries_exhausted dead letter naming the timeout; the other events
// are delivered. (Before: 19 requests in 6 s and never dead-lettered, each
// timeout handed back as if Chapar were shutting down.)
func TestVendorTimeoutIsAChargedAttempt(t *testing.T) {
	e := testenv.New(t)
	sink := timingOut(e.Sink("gateway", emulator.MetrixGateway, slugs, nil))
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	e.Start([]config.Sink{sink}, gatewayRoute)
	got := publishTracks(t, e, 9, "order_paid")
	env := testenv.Track(t, "order_paid", "u-bad")
	vendor.SetFault(hang(env.ID))
	e.Publish(env)
	testenv.Eventually(t, 20*time.Second, "the others delivered", allDelivered(t, e, got))
	testenv.Eventually(t, 20*time.Second, "the hanging event dead-lettered", func() bool {
		return len(deadLetters(t, e, dlq.Filter{})) == 1
	})
	recs := deadLetters(t, e, dlq.Filter{})
	r := recs[0]
	if r.EventID != env.ID || r.Reason != outcome.RetriesExhausted || r.Attempts != 3 {
		t.Errorf("dead letter %s %s after %d attempts, want %s retries_exhausted after 3", r.EventID, r.Reason, r.Attempts, env.ID)
	}
	if !strings.Contains(strings.ToLower(r.Error), "timeout") && !strings.Contains(r.Error, "deadline") {
		t.Errorf("the dead letter's error %q does not say the vendor timed out", r.Error)
	}
	hung := 0
	for _, req := range vendor.Requests() {
		if strings.Contains(string(req.Body), env.ID) {
			hung++
		}
	}
	if hung != 3 {
		t.Errorf("the hanging event got %d requests, want max_attempts (3)", hung)
	}
}

// A vendor that hangs for every request opens the breaker like one that
// answers 503: the requests it gets are bounded by the threshold, what was
// in flight, and one probe per open period. (Before: 38 requests in 4 s
// from 2 workers with threshold 3; the breaker never opened.)
func TestHungVendorOpensTheBreaker(t *testing.T) {
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Timeout = 200 * time.Millisecond
	sink.Concurrency = 2
	sink.Breaker = retry.BreakerSettings{FailureThreshold: 3, OpenTimeout: time.Second}
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(hang(""))
	d := e.Start([]config.Sink{sink}, gatewayRoute)
	ids := publishTracks(t, e, 20, "order_paid")
	testenv.Eventually(t, 10*time.Second, "the breaker opened", func() bool {
		return d.Tally.BreakerState("gateway") == gobreaker.StateOpen
	})
	start, before := time.Now(), vendor.Count(0)
	testenv.Eventually(t, 10*time.Second, "two open periods passed", func() bool { return time.Since(start) > 2*time.Second })
	during := vendor.Count(0) - before
	// Each open period lets one probe through, whose timeout reopens it.
	if bound := int(time.Since(start)/sink.Breaker.OpenTimeout) + 1 + sink.Concurrency; during > bound {
		t.Errorf("%d requests reached the hung vendor in %s with the breaker open; want at most %d", during, time.Since(start).Round(time.Millisecond), bound)
	}
	vendor.ClearFault()
	testenv.Eventually(t, 20*time.Second, "every event delivered after recovery", allDelivered(t, e, ids))
	if recs := deadLetters(t, e, dlq.Filter{}); len(recs) != 0 {
		t.Errorf("a hung vendor, then recovered, dead-lettered %d events (first: %+v)", len(recs), recs[0])
	}
}

// A batch with one item that makes the request hang: its batch-mates are
// delivered once, not charged and not dead-lettered; the item that hangs
// is isolated and dead-lettered after max_attempts. (Before: 0 of 19
// delivered in 10 s.)
func TestBatchIsolatesAnItemThatHangs(t *testing.T) {
	e := testenv.New(t)
	sink := timingOut(batched(e.Sink("chabok", emulator.Chabok, nil, nil), 20, 200*time.Millisecond))
	vendor := e.Emu.Vendor(emulator.Chabok)
	vendor.SetFault(hang(`"eventName":"hangs"`))
	d := e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"chabok"}}})
	const n, bad = 20, 7
	ids := publishSeq(t, e, n, 5, func(i int) string {
		if i == bad {
			return "hangs"
		}
		return "order_paid"
	})
	testenv.Eventually(t, 20*time.Second, "the batch-mates delivered", func() bool { return d.Tally.DeliveredTo("chabok") == n-1 })
	testenv.Eventually(t, 20*time.Second, "the hanging item dead-lettered", func() bool {
		return len(deadLetters(t, e, dlq.Filter{})) == 1
	})
	seqs, requests := chabokSeqs(t, e)
	exactlyOnce(t, seqs, n, bad)
	recs := deadLetters(t, e, dlq.Filter{})
	if r := recs[0]; r.EventID != ids[bad] || r.Reason != outcome.RetriesExhausted || r.Attempts < 3 {
		t.Errorf("dead letter %s %s after %d attempts, want %s retries_exhausted after at least 3 requests", r.EventID, r.Reason, r.Attempts, ids[bad])
	}
	t.Logf("%d requests (%d timed out) for %d events, one hanging", requests, vendor.Count(emulator.StatusClientGone), n)
}

// An ordered key whose head hangs: the head is charged per attempt and
// dead-lettered after max_attempts, which releases the barrier; the key's
// later events follow in order. (Before: the key was stuck for ever.)
func TestOrderHeadThatHangsReleasesTheBarrier(t *testing.T) {
	e := testenv.New(t)
	k := newKeyed(t, []string{"u0", "u1"}, 4)
	bad := k.ids["u0"][0]
	e.Emu.Vendor(emulator.MetrixGateway).SetFault(hang(bad))
	sink := timingOut(orderedSink(e))
	e.Start([]config.Sink{sink}, gatewayRoute)
	k.publish(e, 0, len(k.envs))
	testenv.Eventually(t, 20*time.Second, "every other event delivered", k.delivered(t, e, bad))
	k.checkOrder(t, e, false, bad)
	recs := deadLetters(t, e, dlq.Filter{})
	if len(recs) != 1 || recs[0].EventID != bad || recs[0].Reason != outcome.RetriesExhausted || !recs[0].ReleasedBarrier {
		t.Fatalf("dead letters %+v, want one retries_exhausted for %s that released the barrier", recs, bad)
	}
}
