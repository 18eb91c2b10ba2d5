package topology

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Review (h-cluster): two replicas of a new config start at once and
// both make the same sink the lead, each holding its consumers paused
// until its own now+leadHold. When the pause with the earlier end lands
// last, the other bind's HoldForWidening waits for a pause "until its own
// or later" that never comes: it gives up after holdApplyTimeout, and
// that bind goes on unheld (its sweep from the read before the hold, no
// takeover recorded) five seconds late. The consumer was held all along.
func TestReviewHoldForWideningAcceptsAConcurrentHoldEndingSooner(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	narrow := EventFilter{ByType: true, Types: []string{"order.created"}}
	const trials = 20
	var failed atomic.Int32
	var wg sync.WaitGroup
	for i := range trials {
		sink := fmt.Sprintf("gw%d", i)
		if _, err := topo.EnsureSink(ctx, js, sink, ConsumerSettings{AckWait: 30 * time.Second, MaxAckPending: 100, Fence: "old", Filter: narrow}); err != nil {
			t.Fatal(err)
		}
		prior, err := topo.PriorReads(ctx, js, sink)
		if err != nil {
			t.Fatal(err)
		}
		sooner := time.Now().Add(30 * time.Second)
		later := sooner.Add(time.Millisecond)
		go1 := make(chan struct{})
		wg.Go(func() {
			<-go1
			if err := topo.HoldForWidening(ctx, js, sink, prior, later); err != nil {
				failed.Add(1)
				t.Logf("%s: %v", sink, err)
			}
		})
		wg.Go(func() {
			<-go1
			if err := topo.HoldForWidening(ctx, js, sink, prior, sooner); err != nil {
				failed.Add(1)
				t.Logf("%s: %v", sink, err)
			}
		})
		close(go1)
	}
	wg.Wait()
	if n := failed.Load(); n > 0 {
		t.Errorf("%d of %d holds racing another bind's hold of the same consumer gave up, the consumer held all along", n, 2*trials)
	}
}
