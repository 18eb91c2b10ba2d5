package topology

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Review (h-healer): RestoreLead reads a sink's events consumer and writes
// it back marked and reading every subject. A replica of another config
// binding the sink between that read and that write (its fence, its
// ack_wait) has them overwritten by what was read before: the consumer
// ends up carrying the fence of a config that no longer owns the sink, so
// the replica that just bound it is fenced out of it (its gate shut, it
// pulls nothing) and an old replica, if one still runs, judges the sink's
// skips by routes the deployment replaced. Same shape as markRemoving's
// race (TestReviewMarkRemovingDoesNotRestoreAStaleFence).
//
// The bind racing it also failed, now and then, with the client's
// "multiple consumer filter subjects not supported by nats-server": its
// update's answer showed RestoreLead's config (no filter), not its own.
// A bind tries again; the fence lost is not.
func TestReviewRestoreLeadDoesNotRestoreAStaleFence(t *testing.T) {
	t.Skip("DEFECT: RestoreLead's read-modify-write UpdateConsumer restores the fence and ack_wait it read before a racing bind of " +
		"another config (33 of 60 racing binds lost their fence, -race, loaded machine; 1 of 60 since its hold reads the config again after the pause); that config's replicas are then fenced out " +
		"of the sink until one binds again (once no running replica holds the fence put back, they say so: " +
		"TestAFenceNoRunningReplicaHoldsIsReported). JetStream has no compare-and-set on a consumer's config; see the review report")
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	narrow := EventFilter{ByType: true, Types: []string{"order.created"}}
	const trials = 60
	stale, staleAckWait := 0, 0
	for i := range trials {
		// Unmarked and narrow, owned by "old": as a healer that had not
		// seen the mark recreated it.
		sink := fmt.Sprintf("gw%d", i)
		if _, err := topo.EnsureSink(ctx, js, sink, ConsumerSettings{AckWait: 30 * time.Second, MaxAckPending: 100,
			Fence: "old", Filter: narrow}); err != nil {
			t.Fatal(err)
		}
		mine := fmt.Sprintf("new-%d", i)
		var wg sync.WaitGroup
		go1 := make(chan struct{})
		wg.Go(func() {
			<-go1
			if _, _, err := RestoreLead(ctx, js, topo.EventsStream(), SinkConsumer(sink), time.Now().Add(30*time.Second)); err != nil {
				t.Error(err)
			}
		})
		wg.Go(func() {
			<-go1
			if _, err := topo.EnsureSink(ctx, js, sink, ConsumerSettings{AckWait: 45 * time.Second, MaxAckPending: 100,
				Fence: mine, Filter: narrow}); err != nil {
				t.Error(err)
			}
		})
		close(go1)
		wg.Wait()
		c, err := js.Consumer(ctx, topo.EventsStream(), SinkConsumer(sink))
		if err != nil {
			t.Fatal(err)
		}
		cfg := c.CachedInfo().Config
		if cfg.Metadata[FenceMetadata] != mine {
			stale++
		}
		if cfg.AckWait != 45*time.Second {
			staleAckWait++
		}
	}
	t.Logf("%d of %d binds racing RestoreLead left the consumer with a fence other than the binding replica's; %d with an ack_wait other than its",
		stale, trials, staleAckWait)
	if stale > 0 {
		t.Errorf("%d of %d binds racing RestoreLead lost their fence", stale, trials)
	}
}
