package dispatch_test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Review of ffd62c4, 0e21e7a, 9fed9f7 (round 13): the "window shared /
// starved" rule firing where it should not, wedges and spinning, replicas
// with partitions and redeliveries, and nBehind's accounting.

// rev13Backlog publishes users×perUser tracks while a first dispatcher is
// stopped (so the consumer is behind), starts one with fault set on the
// vendor, waits for every event, checks each user's events once and in
// order, and returns events per request.
func rev13Backlog(t *testing.T, label string, fault *emulator.Fault, maxWait time.Duration) float64 {
	e := testenv.New(t)
	sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 200, maxWait)
	sink.Concurrency = 4
	sink.MaxAckPending = 300 // hold 264
	sink.Timeout = 10 * time.Second
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	start := func() *testenv.Dispatcher {
		return e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}},
			func(c *config.Dispatcher) { c.AckWait = 5 * time.Minute })
	}
	if err := start().Stop(); err != nil {
		t.Fatal(err)
	}
	users := usersOn("u", 0, 1, 40)
	order := publishUsers(t, e, users, 25, "order_paid")
	if fault != nil {
		vendor.SetFault(*fault)
	}
	began := time.Now()
	start()
	testenv.Eventually(t, 90*time.Second, "the backlog delivered", func() bool {
		_, ev, _ := requestStats(t, vendor, users)
		return ev == 1000
	})
	took := time.Since(began)
	checkOnceInOrder(t, vendor, order)
	r, ev, singles := requestStats(t, vendor, users)
	t.Logf("%s: %d events in %d requests (%.2f per request, %d of one event) in %s", label, ev, r, float64(ev)/float64(r), singles, took.Round(10*time.Millisecond))
	return float64(ev) / float64(r)
}

// (a) A slow vendor: every sender busy, the hold full, the collector not
// reading its input meanwhile (lastIn goes stale). When a batch is done
// and held drops below the hold, the starve rule sees no input for the
// whole request's latency: does it send groups early, emptier?
func TestRev13SlowVendorBacklogStillBatches(t *testing.T) {
	per := rev13Backlog(t, "vendor 100 ms", &emulator.Fault{Status: 200, Latency: 100 * time.Millisecond}, 2*time.Second)
	if per < 5 { // hold/keys = 6.6
		t.Errorf("%.2f events per request behind a slow vendor, want about hold/keys (6.6)", per)
	}
}

// (a) The vendor throttles (429, Retry-After 1 s) a few times during the
// backlog: the gate shuts, the pull stops (feed) while NumPending > 0, and
// no input comes: the starve rule takes that for a window withheld by the
// server and sends what is held into the shut gate.
func TestRev13ThrottledBacklogStillBatches(t *testing.T) {
	per := rev13Backlog(t, "429 Retry-After 1 s ×3", &emulator.Fault{Status: 429, RetryAfter: "1", Count: 3}, 5*time.Second)
	if per < 5 {
		t.Errorf("%.2f events per request with the vendor throttling, want about hold/keys (6.6)", per)
	}
}

// rev13LiveAfter runs live traffic (4 users on partition 0, one event
// every 40 ms for 3 s, max_wait 1 s: about 6 events per user per window)
// after a backlog on partition 1 whose rest, if purge, is purged while the
// dispatcher is part way through it (as max_age or an operator's purge
// removes what a lagging consumer had pending). It returns the live
// events per request.
//
// With bursts, a fifth partition-0 user also publishes 30 events every
// 400 ms (less than max_wait apart), so that partition's consumer now and
// then says it has more pending (rev14).
func rev13LiveAfter(t *testing.T, purge, bursts bool) float64 {
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
	publishUsers(t, e, backlog, 50, "order_paid") // 2,000 on partition 1
	if purge {
		vendor.SetFault(emulator.Fault{Status: 200, Latency: 300 * time.Millisecond})
	}
	start()
	if purge {
		purgeBacklogPartway(t, e, vendor, backlog)
		// The purged partition's word that it had more pending is believed
		// for max_wait after it said so (batch_keyed.go, "A window
		// shared"): meanwhile live events leave as they come. What is
		// asserted is the bound: past it, live traffic batches as after a
		// backlog that drained. The purge also drops the consumer's acks
		// pending, so idle comes before the last events the dispatcher had
		// pulled are sent; each was taken before its request, so max_wait
		// without a request is past the bound.
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
	_, bev, _ := requestStats(t, vendor, backlog)
	all := usersOn("live", 0, 2, 5)
	live, burst := all[:4], all[4:]
	order := map[string][]string{}
	tk := time.NewTicker(40 * time.Millisecond)
	n, burstN := 0, 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); n++ {
		<-tk.C
		if bursts && n%10 == 0 {
			publishUsers(t, e, burst, 30, "order_paid")
			burstN += 30
		}
		u := live[n%len(live)]
		env := testenv.Track(t, "order_paid", u, envelope.WithSubject(u))
		order[u] = append(order[u], env.ID)
		e.Publish(env)
	}
	tk.Stop()
	testenv.Eventually(t, 20*time.Second, "the live traffic delivered", func() bool {
		_, ev, _ := requestStats(t, vendor, live)
		_, bev, _ := requestStats(t, vendor, burst)
		return ev == n && bev == burstN
	})
	checkOnceInOrder(t, vendor, order)
	r, ev, singles := requestStats(t, vendor, live)
	t.Logf("purge=%v (%d of the backlog delivered): live %d events in %d requests (%.2f per request, %d of one event)", purge, bev, ev, r, float64(ev)/float64(r), singles)
	return float64(ev) / float64(r)
}

// purgeBacklogPartway purges partition 1's events stream once the
// backlog's first requests have reached the vendor (slowed by the
// caller), as max_age or an operator's purge removes what a lagging
// consumer had pending, lets the vendor answer at once again and waits
// for what the dispatcher held of it to settle.
func purgeBacklogPartway(t *testing.T, e *testenv.Env, vendor *emulator.Vendor, backlog []string) {
	t.Helper()
	ctx := context.Background()
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
}

// (d) A partition whose pending events vanish without being delivered
// (purged; max_age does the same to a lagging consumer): its last event
// had NumPending > 0, so it stays "behind" (nBehind 1) until it hands
// over another event. Meanwhile the starve rule takes every 20 ms without
// input for a window withheld by the server, and another partition's live
// traffic leaves one event per request instead of waiting max_wait.
//
// Red on 9fed9f7: 1.00 events per request (75 of 75 requests carried one
// event) against 6.25 after a backlog that drained; green on e71bafd
// (6.25 both ways). Now the word is believed for max_wait at most, and
// live traffic past that batches as before.
func TestRev13PurgedPartitionLeavesTheStarveRuleOn(t *testing.T) {
	base := rev13LiveAfter(t, false, false)
	stuck := rev13LiveAfter(t, true, false)
	if stuck < base/2 {
		t.Errorf("live traffic went %.2f events per request after a partition's backlog was purged, %.2f after one drained: the purged partition stays behind (nBehind > 0) and the starve rule sends every group 20 ms after the last input", stuck, base)
	}
}

// rev13Recorder wraps a replica's gateway sink and records, per user, the
// event ids it sent, request by request.
type rev13Recorder struct {
	sinks.KeyedBatchSink
	mu   *sync.Mutex
	sent map[string][]string
}

func (r rev13Recorder) DeliverBatch(ctx context.Context, ds []*sinks.Delivery) []error {
	errs := r.KeyedBatchSink.DeliverBatch(ctx, ds)
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, d := range ds {
		if errs[i] == nil {
			k := r.BatchKey(d.Event)
			r.sent[k] = append(r.sent[k], d.Event.ID)
		}
	}
	return errs
}

// (c) Three replicas on three partitions, a vendor slower than ack_wait
// (held batches and batches in the hand-off kept alive), the starve rule
// firing on every replica: no event lost, none accepted twice, no
// redelivery, and each replica sends a user's events in publish order.
func TestRev13ThreeReplicasPartitionsSlowerThanAckWait(t *testing.T) {
	e := testenv.NewPartitioned(t, 3)
	sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 200, 10*time.Second)
	// Eight senders a replica keep the run short; an ack_wait of 1.5 s
	// leaves the keeper (a tick each ack_wait ÷ 3) a second of lateness on
	// a loaded machine before a held event is redelivered.
	sink.Concurrency = 8
	sink.MaxAckPending = 120
	sink.Timeout = 10 * time.Second
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 200, Latency: 1800 * time.Millisecond}) // past ack_wait
	var mu sync.Mutex
	sent := make([]map[string][]string, 3)
	for i := range sent {
		sent[i] = map[string][]string{}
		e.StartWrapped([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}},
			func(_ string, s sinks.Sink) sinks.Sink {
				return rev13Recorder{KeyedBatchSink: s.(sinks.KeyedBatchSink), mu: &mu, sent: sent[i]}
			},
			func(c *config.Dispatcher) { c.AckWait = 1500 * time.Millisecond })
	}
	var users []string
	for p := range 3 {
		users = append(users, usersOn(fmt.Sprintf("p%d-", p), p, 3, 20)...)
	}
	const perUser = 8
	order := publishUsers(t, e, users, perUser, "order_paid")
	total := len(users) * perUser
	testenv.Eventually(t, 90*time.Second, "every event accepted", func() bool {
		_, ev, _ := requestStats(t, vendor, users)
		return ev >= total
	})
	testenv.Eventually(t, 20*time.Second, "consumers idle", func() bool { return e.Idle("gateway") })
	r, ev, singles := requestStats(t, vendor, users)
	t.Logf("three replicas: %d events (%d published) in %d requests (%.2f per request, %d of one event)", ev, total, r, float64(ev)/float64(r), singles)
	// Once each, none lost.
	us, ids := gatewayBodies(t, vendor)
	count := map[string]int{}
	for i := range us {
		for _, id := range ids[i] {
			count[id]++
		}
	}
	lost, twice := 0, 0
	for _, list := range order {
		for _, id := range list {
			switch count[id] {
			case 0:
				lost++
			case 1:
			default:
				twice++
			}
		}
	}
	if lost > 0 || twice > 0 {
		t.Errorf("%d events lost, %d accepted more than once", lost, twice)
	}
	// Per replica, a user's events in publish order.
	pos := map[string]int{}
	for _, list := range order {
		for i, id := range list {
			pos[id] = i
		}
	}
	broken, across := 0, 0
	for ri, m := range sent {
		for u, list := range m {
			for i := 1; i < len(list); i++ {
				if pos[list[i]] <= pos[list[i-1]] {
					broken++
					t.Errorf("replica %d sent user %s's events out of order: %v", ri, u, list)
					break
				}
			}
		}
	}
	idUser := map[string]string{}
	for u, list := range order {
		for _, id := range list {
			idUser[id] = u
		}
	}
	replicas := map[string]map[int]bool{}
	recorded := 0
	for ri, m := range sent {
		for _, list := range m {
			for _, id := range list {
				recorded++
				u := idUser[id]
				if replicas[u] == nil {
					replicas[u] = map[int]bool{}
				}
				replicas[u][ri] = true
			}
		}
	}
	for _, rs := range replicas {
		if len(rs) > 1 {
			across++
		}
	}
	if recorded != total {
		t.Errorf("the replicas' sinks recorded %d accepted events, want %d", recorded, total)
	}
	t.Logf("%d users' events went to more than one replica (allowed); %d out of order within a replica", across, broken)
	// No redelivery: each partition's consumer made one delivery per event.
	for p := range 3 {
		c, err := e.JS.Consumer(context.Background(), e.Topo.EventsStreamOf(p), topology.SinkConsumer("gateway"))
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if want := uint64(20 * perUser); info.Delivered.Consumer != want {
			t.Errorf("partition %d: the consumer made %d deliveries of %d events: redelivered while held", p, info.Delivered.Consumer, want)
		}
	}
}

// cpuOver is the process's CPU time (user and system) over d.
func cpuOver(t *testing.T, d time.Duration) time.Duration {
	t.Helper()
	read := func() time.Duration {
		var ru syscall.Rusage
		if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
			t.Fatal(err)
		}
		return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	before := read()
	time.Sleep(d) // a measurement window, not a wait on a condition
	return read() - before
}

// (b) The starve rule on (a partition left behind, as in
// TestRev13PurgedPartitionLeavesTheStarveRuleOn) with nothing idle, and
// then with idle groups no sender can take (every sender on a 3 s
// request, the hand-off full): the collector blocks, it does not spin.
// The process (embedded server and emulator included) is measured.
func TestRev13StarvedCollectorDoesNotSpin(t *testing.T) {
	e := testenv.NewPartitioned(t, 2)
	sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 200, time.Minute)
	sink.Concurrency = 2
	sink.MaxAckPending = 300
	sink.Timeout = 30 * time.Second
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
	vendor.SetFault(emulator.Fault{Status: 200, Latency: 300 * time.Millisecond})
	start()
	purgeBacklogPartway(t, e, vendor, backlog)
	idle := cpuOver(t, 2*time.Second)
	vendor.SetFault(emulator.Fault{Status: 200, Latency: 3 * time.Second})
	live := usersOn("live", 0, 2, 12)
	publishUsers(t, e, live, 1, "order_paid")
	// Within 20 ms the starve rule sends 2 groups to the senders (3 s
	// requests) and 2 to the hand-off; 8 stay idle, pick naming one the
	// collector cannot send. The window ends before the first request.
	blocked := cpuOver(t, 2*time.Second)
	if _, ev, _ := requestStats(t, vendor, live); ev != 0 {
		t.Fatalf("%d live events accepted within the window: the senders were not busy throughout", ev)
	}
	// The 3 s requests were for the window. The two under way keep their
	// latency (the emulator takes a fault as a request arrives), so the
	// collector still waits for a sender; the groups after them need not
	// take 3 s each (about 15 s more for the 12 users).
	vendor.ClearFault()
	t.Logf("CPU over 2 s: starve rule on, nothing held: %s; idle groups, senders busy: %s", idle, blocked)
	for _, c := range []time.Duration{idle, blocked} {
		if c > 600*time.Millisecond {
			t.Errorf("%s of CPU in 2 s with nothing to do: the collector spins", c)
		}
	}
	testenv.Eventually(t, 30*time.Second, "the live events delivered", func() bool {
		_, ev, _ := requestStats(t, vendor, live)
		return ev == len(live)
	})
}
