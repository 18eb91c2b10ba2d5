package dispatch_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Issue 20, prefetch fairness with three replicas: three dispatchers share
// a sink's durable consumer over a backlog, the vendor slow (4 workers at
// 20 ms: ~200 events/s a replica), the second and third joining while the
// first works (a scale-out). No replica ever holds more than its prefetch
// and one message per worker (and the one its pull hands over), whatever
// the others do: what a replica holds unsettled is what its connection
// received less what it delivered (acked). Its connection also receives
// API answers and heartbeats, counted once all is delivered and used as
// slack, so a replica over the bound by more than that fails for sure;
// the check is a lower bound of what it held, sampled. (A subscription
// of the test's to the replicas' inboxes would see each delivery, but its
// interest keeps the pull requests of a drained pull alive at the server,
// which then delivers to them for nobody until ack_wait: it changes what
// it measures.) How the deliveries split and how long each replica sat
// idle at the end while another still worked through what it had pulled
// are logged: docs/scaling.md, "Replicas and the pull-ahead".
func TestPrefetchSharedByThreeReplicas(t *testing.T) {
	t.Parallel() // its bound is structural (what each replica holds), not a rate
	for _, c := range []struct {
		name          string
		maxAckPending int
	}{
		{"max_ack_pending 1000", 1000}, // the default: a prefetch of 500
		{"max_ack_pending 200", 200},   // a prefetch of 100
	} {
		t.Run(c.name, func(t *testing.T) { prefetchShared(t, c.maxAckPending) })
	}
}

func prefetchShared(t *testing.T, maxAckPending int) {
	const replicas, events, workers = 3, 2000, 4
	e := testenv.New(t)
	hook := e.Sink("hook", emulator.Webhook, nil, nil)
	hook.Concurrency, hook.MaxAckPending = workers, maxAckPending
	e.Emu.Vendor(emulator.Webhook).SetFault(emulator.Fault{Status: 200, Latency: 20 * time.Millisecond})
	routes := []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"hook"}}}
	// The sink exists before the backlog (a new sink starts at new events).
	if err := e.Start([]config.Sink{hook}, routes).Stop(); err != nil {
		t.Fatal(err)
	}
	for i := range events {
		e.Publish(testenv.Track(t, "order_paid", fmt.Sprintf("user-%d", i)))
	}
	reps := make([]*testenv.Dispatcher, replicas)
	peak := make([]int, replicas) // received less delivered, at most
	last := make([]time.Time, replicas)
	seen := make([]int, replicas)
	sample := func() (total int) {
		for i, r := range reps {
			if r == nil {
				continue
			}
			d := r.Tally.DeliveredTo("hook")
			peak[i] = max(peak[i], int(r.NC.Stats().InMsgs)-d)
			if d > seen[i] {
				seen[i], last[i] = d, time.Now()
			}
			total += d
		}
		return total
	}
	began := time.Now()
	for i := range reps {
		reps[i] = e.Start([]config.Sink{hook}, routes)
		testenv.Eventually(t, 30*time.Second, "the replica delivering", func() bool {
			sample()
			return reps[i].Tally.DeliveredTo("hook") >= 50
		})
	}
	testenv.Eventually(t, 120*time.Second, "every event delivered", func() bool { return sample() >= events })
	end := time.Now()
	testenv.Eventually(t, 20*time.Second, "the consumers idle", func() bool { return e.Idle("hook") })
	bound := dispatch.Prefetch(workers, maxAckPending) + workers + 1
	for i, r := range reps {
		noise := int(r.NC.Stats().InMsgs) - r.Tally.DeliveredTo("hook")
		t.Logf("replica %d: delivered %d (%.0f%%), held %d unsettled at most (±%d), idle for the last %s of %s",
			i, seen[i], 100*float64(seen[i])/events, peak[i]-noise, noise,
			end.Sub(last[i]).Round(10*time.Millisecond), end.Sub(began).Round(10*time.Millisecond))
		if peak[i] > bound+noise {
			t.Errorf("replica %d held at least %d messages unsettled; its prefetch and workers are %d", i, peak[i]-noise, bound)
		}
	}
}
