package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// rev14BurstyLiveAfter is rev13LiveAfter with a burst of 30 events of
// another partition-0 user every 400 ms (less than max_wait apart), so
// that partition's consumer now and then says it has more pending. It
// returns the trickle users' events per request.
func rev14BurstyLiveAfter(t *testing.T, purge bool) float64 {
	e := testenv.NewPartitioned(t, 2)
	sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 200, time.Second)
	sink.Concurrency = 4
	sink.MaxAckPending = 300
	sink.Timeout = 10 * time.Second
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	start := func() *testenv.Dispatcher {
		return e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}},
			func(c *config.Dispatcher) { c.AckWait = time.Minute })
	}
	if err := start().Stop(); err != nil {
		t.Fatal(err)
	}
	backlog := usersOn("b", 1, 2, 40)
	publishUsers(t, e, backlog, 50, "order_paid")
	if purge {
		vendor.SetFault(emulator.Fault{Status: 200, Latency: 300 * time.Millisecond})
	}
	start()
	ctx := context.Background()
	if purge {
		testenv.Eventually(t, 30*time.Second, "the backlog's first requests", func() bool {
			_, ev, _ := requestStats(t, vendor, backlog)
			return ev > 0
		})
		s, err := e.JS.Stream(ctx, e.Topo.EventsStreamOf(1))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Purge(ctx); err != nil {
			t.Fatal(err)
		}
		vendor.ClearFault()
		testenv.Eventually(t, 30*time.Second, "what was held of the backlog settled", func() bool { return e.Idle("gateway") })
		testenv.Eventually(t, 15*time.Second, "no request for max_wait", func() bool {
			var last time.Time
			for _, r := range vendor.Requests() {
				if r.At.After(last) {
					last = r.At
				}
			}
			return time.Since(last) > sink.Batch.MaxWait
		})
	} else {
		testenv.Eventually(t, 30*time.Second, "the backlog delivered", func() bool {
			_, ev, _ := requestStats(t, vendor, backlog)
			return ev == 2000
		})
	}
	all := usersOn("live", 0, 2, 5)
	live, burst := all[:4], all[4:]
	tk := time.NewTicker(40 * time.Millisecond)
	n, bursts := 0, 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); n++ {
		<-tk.C
		if n%10 == 0 {
			publishUsers(t, e, burst, 30, "order_paid")
			bursts += 30
		}
		u := live[n%len(live)]
		e.Publish(testenv.Track(t, "order_paid", u, envelope.WithSubject(u)))
	}
	tk.Stop()
	testenv.Eventually(t, 20*time.Second, "the live traffic delivered", func() bool {
		_, ev, _ := requestStats(t, vendor, live)
		_, bev, _ := requestStats(t, vendor, burst)
		return ev == n && bev == bursts
	})
	r, ev, singles := requestStats(t, vendor, live)
	t.Logf("purge=%v: trickle %d events in %d requests (%.2f per request, %d of one event)", purge, ev, r, float64(ev)/float64(r), singles)
	return float64(ev) / float64(r)
}

// The rev13 purge with bursty live traffic on the other partition: each
// burst's word refreshes the collector-wide behindUntil, and the purged
// partition's stale flag keeps nBehind at 1 after the burst is caught up.
//
// Red on 0666fc4: trickle 1.00 events per request (75 of 75 requests one
// event) after the purge, 5.77 after a backlog that drained.
func TestRev14PurgedPartitionWithBurstyLiveTraffic(t *testing.T) {
	base := rev14BurstyLiveAfter(t, false)
	stuck := rev14BurstyLiveAfter(t, true)
	if stuck < base/2 {
		t.Errorf("trickle traffic went %.2f events per request after a partition's backlog was purged, %.2f after one drained: another partition's bursts keep the purged partition's stale word believed (behindUntil is collector-wide)", stuck, base)
	}
}
