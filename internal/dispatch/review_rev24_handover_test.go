package dispatch_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Review rev24: after a graceful hand-over the new holder's catch-up waits
// for the old holder's messages to settle; with one of them failing
// throughout, the design says newer events wait until ack_wait after the
// pin was first seen (the counts agree then). Under steady traffic of
// other keys, messages delivered between the held count and the answer
// make the counts disagree: does the catch-up still end near ack_wait, or
// is every key held for as long as the head fails (a wedge)?
func TestReviewRev24HandOverWithAFailingHeadUnderTrafficEndsNearAckWait(t *testing.T) {
	e := testenv.New(t)
	sink := orderedSink(e)
	sink.Breaker.FailureThreshold = 100000
	sink.Retry.InitialInterval = 200 * time.Millisecond
	sink.Retry.Multiplier = 1
	sink.Retry.MaxInterval = 200 * time.Millisecond
	sink.Retry.MaxAttempts = 0
	sink.Retry.MaxElapsed = 0
	const ackWait = 3 * time.Second
	withAckWait := func(c *config.Dispatcher) { c.AckWait = ackWait }
	a := e.Start([]config.Sink{sink}, gatewayRoute, withAckWait)
	b := e.Start([]config.Sink{sink}, gatewayRoute, withAckWait)
	head := testenv.Track(t, "order_paid", "stuck", envelope.WithSubject("stuck"))
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 503, Match: head.ID}) // until cleared
	e.Publish(head)
	testenv.Eventually(t, 10*time.Second, "the head tried", func() bool { return vendor.Count(503) >= 1 })
	pinned, other := a, b
	_ = other
	if b.Tally.DeliveredTo("gateway")+int(0) > 0 {
		pinned = b
	}
	// Steady traffic of other keys, ~400/s, throughout.
	var stop atomic.Bool
	var sent atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(5 * time.Millisecond)
		defer tk.Stop()
		for i := 0; !stop.Load(); i++ {
			<-tk.C
			for j := range 2 {
				e.Publish(testenv.Track(t, "order_paid", fmt.Sprintf("k%d", (2*i+j)%50), envelope.WithSubject("k")))
				sent.Add(1)
			}
		}
	}()
	defer func() { stop.Store(true); <-done }()
	testenv.Eventually(t, 10*time.Second, "traffic flowing", func() bool { return sent.Load() >= 100 })
	// Which replica holds the pin: the one whose requests reached the vendor.
	if a.Tally.DeliveredTo("gateway") == 0 {
		pinned = b
	}
	// A marker published after the stop; it must arrive after catch-up.
	pinBefore := pinnedClient(t, e)
	stoppedAt := time.Now()
	if err := pinned.Stop(); err != nil {
		t.Fatal(err)
	}
	marker := testenv.Track(t, "order_paid", "marker", envelope.WithSubject("marker"))
	e.Publish(marker)
	testenv.Eventually(t, 60*time.Second, "the marker delivered", func() bool {
		for _, r := range vendor.Requests() {
			if r.Status == 200 && containsID(r.Body, marker.ID) {
				return true
			}
		}
		return false
	})
	took := time.Since(stoppedAt)
	if p := pinnedClient(t, e); p == pinBefore || p == "" {
		t.Fatalf("the pin did not move (before %q, now %q): stopped the wrong replica", pinBefore, p)
	}
	t.Logf("the marker reached the vendor %s after the stop (ack_wait %s), %d events published", took.Round(10*time.Millisecond), ackWait, sent.Load())
	// A wedge would hold them for good; the catch-up's patience is about
	// 2 × ack_wait + 1 s (catchUpPatience): room for a loaded machine.
	if took > 5*ackWait {
		t.Errorf("catch-up held newer keys for %s behind a failing head (ack_wait %s)", took, ackWait)
	}
	vendor.ClearFault()
}

func containsID(body []byte, id string) bool {
	return len(id) > 0 && len(body) > 0 && stringsContains(string(body), id)
}

func stringsContains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
