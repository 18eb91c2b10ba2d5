package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/deliveries"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/jsread"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// Review of delivery records across replicas: an event whose first
// attempt fails is retried, often by the other replica, which records it
// delivered. Records are plain publishes from two connections, stored in
// arrival order, and the lookup takes the last as the latest: the
// retrying record (written after the retry copy is stored) must not land
// after the delivered one. Every event's latest record ends delivered.
func TestReviewRecordsAfterRetriesAcrossReplicasEndDelivered(t *testing.T) {
	t.Parallel() // waits on replicas and the vendor, not on the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	e.Emu.Vendor(emulator.MetrixGateway).SetFault(emulator.Fault{Status: 503, Count: 40})
	e.Start([]config.Sink{sink}, gatewayRoute)
	e.Start([]config.Sink{sink}, gatewayRoute)
	ids := publishTracks(t, e, 40, "order_paid")
	testenv.Eventually(t, 30*time.Second, "all delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 10*time.Second, "idle", func() bool { return e.Idle("gateway") })
	if n := e.Emu.Vendor(emulator.MetrixGateway).Count(503); n != 40 {
		t.Fatalf("%d failed attempts, want 40 (each a retry to record)", n)
	}
	var stale []string
	latest := func() bool {
		stale = stale[:0]
		for _, id := range ids {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			recs, err := deliveries.Lookup(ctx, e.NC, e.Topo.DeliveriesStream(), e.Topo.Prefix(), id, jsread.From{})
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != 1 || recs[0].State != deliveries.Delivered {
				stale = append(stale, id)
			}
		}
		return len(stale) == 0
	}
	deadline := time.Now().Add(5 * time.Second)
	for !latest() && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // polling a condition with a deadline
	}
	if len(stale) > 0 {
		t.Errorf("%d of %d delivered events' latest record is not delivered: %v", len(stale), len(ids), stale)
	}
}
