package dispatch_test

import (
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// Review rev24: a start with nothing pending elsewhere must not engage the
// catch-up. One replica starts on a backlog whose first event (u0#0) keeps
// failing for a while; events of other keys published after the start
// (after the first proof) must reach the vendor while u0#0 still fails.
// A spurious catch-up (line = Delivered.Stream at the first proof, floor
// held below it by the failing head) would hold them until ack_wait.
func TestReviewRev24StartWithAFailingHeadDoesNotHoldNewerKeys(t *testing.T) {
	e := testenv.New(t)
	k := newKeyed(t, []string{"u0", "u1", "u2", "u3"}, 5)
	sink := orderedSink(e)
	sink.Breaker.FailureThreshold = 1000
	sink.Retry.InitialInterval = time.Second
	sink.Retry.Multiplier = 1
	sink.Retry.MaxInterval = time.Second
	sink.Retry.Jitter = 0
	const ackWait = 4 * time.Second
	withAckWait := func(c *config.Dispatcher) { c.AckWait = ackWait }
	if err := e.Start([]config.Sink{sink}, gatewayRoute, withAckWait).Stop(); err != nil {
		t.Fatal(err)
	}
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 503, Match: k.ids["u0"][0]}) // until cleared
	k.publish(e, 0, 4)
	e.Start([]config.Sink{sink}, gatewayRoute, withAckWait)
	testenv.Eventually(t, 10*time.Second, "u1#0 delivered", func() bool { return len(k.atVendor(t, e)["u1"]) >= 1 })
	k.publish(e, 4, len(k.envs))
	startedAt := time.Now()
	testenv.Eventually(t, 10*time.Second, "u1..u3 delivered while u0#0 fails", func() bool {
		got := k.atVendor(t, e)
		return len(got["u1"]) == 5 && len(got["u2"]) == 5 && len(got["u3"]) == 5
	})
	if d := time.Since(startedAt); d > ackWait/2 {
		t.Errorf("newer keys took %s (ack_wait %s): held behind the failing head", d, ackWait)
	}
	vendor.ClearFault()
	testenv.Eventually(t, 20*time.Second, "every event delivered", k.delivered(t, e))
	k.checkOrder(t, e, false)
}
