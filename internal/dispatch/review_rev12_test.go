package dispatch_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Review of ffd62c4 (a keyed batcher's backlog end, and its buffered
// hand-off to senders).

// usersOn lists n user ids whose events fall in partition p of parts.
func usersOn(prefix string, p, parts, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		u := fmt.Sprintf("%s%d", prefix, i)
		if envelope.Partition(u, parts) == p {
			out = append(out, u)
		}
	}
	return out
}

// publishUsers publishes perUser tracks for each user, round robin, keyed
// (and so partitioned) by the user, without waiting for each ack; it
// returns each user's ids in publish order.
func publishUsers(t *testing.T, e *testenv.Env, users []string, perUser int, name string) map[string][]string {
	t.Helper()
	order := map[string][]string{}
	for n := range perUser {
		for _, u := range users {
			env := testenv.Track(t, name, u, envelope.WithSubject(u))
			order[u] = append(order[u], env.ID)
			raw, err := env.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := e.JS.PublishAsync(e.Topo.SubjectOf(env), raw, jetstream.WithMsgID(env.ID)); err != nil {
				t.Fatal(err)
			}
			_ = n
		}
	}
	select {
	case <-e.JS.PublishAsyncComplete():
	case <-time.After(20 * time.Second):
		t.Fatal("publishes not acknowledged")
	}
	return order
}

// requestStats is what the gateway accepted for the given users: requests
// and events.
func requestStats(t *testing.T, vendor *emulator.Vendor, users []string) (requests, events, singles int) {
	t.Helper()
	want := map[string]bool{}
	for _, u := range users {
		want[u] = true
	}
	us, ids := gatewayBodies(t, vendor)
	for i, u := range us {
		if !want[u] {
			continue
		}
		requests++
		events += len(ids[i])
		if len(ids[i]) == 1 {
			singles++
		}
	}
	return
}

// checkOnceInOrder checks every user's events reached the gateway once
// each, in publish order.
func checkOnceInOrder(t *testing.T, vendor *emulator.Vendor, order map[string][]string) {
	t.Helper()
	us, ids := gatewayBodies(t, vendor)
	seen := map[string][]string{}
	for i, u := range us {
		seen[u] = append(seen[u], ids[i]...)
	}
	for u, want := range order {
		if strings.Join(seen[u], " ") != strings.Join(want, " ") {
			t.Errorf("user %s: delivered\n %v\nwant (publish order, each once)\n %v", u, seen[u], want)
		}
	}
}

// backlogWithTrickle runs one partitioned backlog (users on partition 1)
// and, if trickle, one event every 20 ms of a user on partition 0 while it
// drains; it returns the backlog users' events per request.
func backlogWithTrickle(t *testing.T, trickle bool) float64 {
	e := testenv.NewPartitioned(t, 2)
	sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 200, 20*time.Second)
	sink.Concurrency = 4
	sink.MaxAckPending = 300 // hold 264 (300 - 32 - 4)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	d := e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}},
		func(c *config.Dispatcher) { c.AckWait = 5 * time.Minute })
	backlog := usersOn("b", 1, 2, 40)
	live := usersOn("live", 0, 2, 1)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var trickled int
	if trickle {
		// The trickle starts before the backlog: partition 0 is caught
		// up, each of its events handed over with NumPending 0.
		wg.Go(func() {
			tk := time.NewTicker(20 * time.Millisecond)
			defer tk.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-tk.C:
				}
				env := testenv.Track(t, "order_paid", live[0], envelope.WithSubject(live[0]))
				raw, _ := env.Marshal()
				if _, err := e.JS.Publish(ctx, e.Topo.SubjectOf(env), raw, jetstream.WithMsgID(env.ID)); err != nil {
					if ctx.Err() == nil {
						t.Error(err)
					}
					return
				}
				trickled++
			}
		})
	}
	const perUser = 50
	order := publishUsers(t, e, backlog, perUser, "order_paid")
	testenv.Eventually(t, 60*time.Second, "the backlog delivered", func() bool {
		r, ev, _ := requestStats(t, vendor, backlog)
		_ = r
		return ev == len(backlog)*perUser
	})
	cancel()
	wg.Wait()
	_ = d
	checkOnceInOrder(t, vendor, order)
	r, ev, singles := requestStats(t, vendor, backlog)
	t.Logf("trickle=%v (%d live events): backlog %d events in %d requests (%.1f per request, %d of one event)", trickle, trickled, ev, r, float64(ev)/float64(r), singles)
	return float64(ev) / float64(r)
}

func TestRev12PartitionCaughtUpDrainsAnotherPartitionsBacklog(t *testing.T) {
	base := backlogWithTrickle(t, false)
	with := backlogWithTrickle(t, true)
	if with < base/2 {
		t.Errorf("a partition's backlog went %.1f events per request while another partition's live events came (NumPending 0), %.1f without them: a caught-up partition ends every partition's backlog", with, base)
	}
}

// liveFillsTheHold publishes live traffic (no backlog: the consumer keeps
// up, every event handed over with NumPending 0) at a rate that fills the
// hold well within max_wait, and returns events per request.
func liveFillsTheHold(t *testing.T) float64 {
	e := testenv.New(t)
	sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 200, 2*time.Second)
	sink.Concurrency = 4
	sink.MaxAckPending = 300 // hold 264: about half a second of this traffic
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}},
		func(c *config.Dispatcher) { c.AckWait = time.Minute })
	users := usersOn("l", 0, 1, 40)
	order := map[string][]string{}
	tk := time.NewTicker(5 * time.Millisecond)
	defer tk.Stop()
	total := 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		<-tk.C
		for range 2 { // about 400 events a second
			u := users[total%len(users)]
			env := testenv.Track(t, "order_paid", u, envelope.WithSubject(u))
			order[u] = append(order[u], env.ID)
			raw, _ := env.Marshal()
			if _, err := e.JS.PublishAsync(e.Topo.SubjectOf(env), raw, jetstream.WithMsgID(env.ID)); err != nil {
				t.Fatal(err)
			}
			total++
		}
	}
	<-e.JS.PublishAsyncComplete()
	testenv.Eventually(t, 30*time.Second, "the traffic delivered", func() bool {
		_, ev, _ := requestStats(t, vendor, users)
		return ev == total
	})
	checkOnceInOrder(t, vendor, order)
	r, ev, singles := requestStats(t, vendor, users)
	t.Logf("live traffic: %d events in %d requests (%.1f per request, %d of one event)", ev, r, float64(ev)/float64(r), singles)
	return float64(ev) / float64(r)
}

// Live traffic that fills the hold is not a backlog, and its requests
// should carry what the hold gives them (about hold ÷ keys, 6.6 here).
func TestRev12LiveTrafficFillingTheHoldStillBatches(t *testing.T) {
	if per := liveFillsTheHold(t); per < 7 {
		t.Errorf("live traffic that fills the hold went %.1f events per request, want about hold/keys (6.6): every time the hold fills, the next event (NumPending 0) starts a drain", per)
	}
}

// The backlog's last message is not the sink's (a track its route does
// not name): it is settled without a batch (pass), so its NumPending 0 is
// never seen by the collector, and the last window waits out max_wait as
// before the change.
func TestRev12BacklogEndingInAnotherRoutesEventStillDrains(t *testing.T) {
	t.Parallel() // asserts order and once (ack_wait 5 min); its 20 s deadline is many times what it takes, max_wait (1 min) far beyond
	for _, tc := range []struct {
		name string
		last func(t *testing.T, e *testenv.Env, user string)
	}{
		{"another route's event", func(t *testing.T, e *testenv.Env, user string) {
			publishUsers(t, e, []string{user}, 1, "page_view") // not routed here
		}},
		{"an invalid envelope", func(t *testing.T, e *testenv.Env, user string) {
			// Dead-lettered invalid_envelope by the sink's worker, its ticket
			// passed with what the consumer had pending behind it.
			e.PublishRaw(e.Topo.EventSubjectFor(envelope.TypeTrack, user), "not-an-envelope", []byte(`{"specversion":"1.0"}`))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := testenv.New(t)
			sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 200, time.Minute)
			sink.Concurrency = 4
			sink.MaxAckPending = 300
			vendor := e.Emu.Vendor(emulator.MetrixGateway)
			start := func() *testenv.Dispatcher {
				return e.Start([]config.Sink{sink}, []config.Route{{Names: []string{"order_paid"}, Sinks: []string{"gateway"}}},
					func(c *config.Dispatcher) { c.AckWait = 5 * time.Minute })
			}
			// A backlog however fast the machine: published while stopped.
			if err := start().Stop(); err != nil {
				t.Fatal(err)
			}
			users := usersOn("u", 0, 1, 40)
			order := publishUsers(t, e, users, 25, "order_paid")
			tc.last(t, e, users[0]) // last in the stream
			start()
			const total = 40 * 25
			testenv.Eventually(t, 20*time.Second, "every event delivered well before max_wait (1 min)", func() bool {
				_, ev, _ := requestStats(t, vendor, users)
				return ev == total
			})
			checkOnceInOrder(t, vendor, order)
		})
	}
}

// Two replicas share the consumer's max_ack_pending: neither holds all it
// may (its hold), yet neither waits out max_wait to send (before, 0 of
// 1,000 events in 20 s with max_wait a minute).
func TestRev12BacklogOverTwoReplicasEndsBeforeMaxWait(t *testing.T) {
	t.Parallel() // asserts delivery (ack_wait 5 min); its 45 s deadline is several times what it takes (7-9 s under load), and below max_wait (1 min)
	e := testenv.New(t)
	sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 200, time.Minute)
	sink.Concurrency = 4
	sink.MaxAckPending = 300
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	for range 2 {
		e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}},
			func(c *config.Dispatcher) { c.AckWait = 5 * time.Minute })
	}
	users := usersOn("u", 0, 1, 40)
	publishUsers(t, e, users, 25, "order_paid")
	const total = 40 * 25
	testenv.Eventually(t, 45*time.Second, "every event accepted before max_wait (1 min)", func() bool {
		_, ev, _ := requestStats(t, vendor, users)
		return ev == total
	})
	r, ev, singles := requestStats(t, vendor, users)
	t.Logf("two replicas: %d events in %d requests (%.1f per request, %d of one event)", ev, r, float64(ev)/float64(r), singles)
}

// Batches waiting in the buffered hand-off (senders deep) longer than
// ack_wait are kept alive there: no event reaches the vendor twice and
// none is redelivered.
func TestRev12BatchesWaitingInTheHandOffAreKeptAlive(t *testing.T) {
	e := testenv.New(t)
	sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 200, 100*time.Millisecond)
	sink.Concurrency = 2 // two senders, two batches waiting for them
	sink.MaxAckPending = 100
	sink.Timeout = 10 * time.Second
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 200, Latency: 1500 * time.Millisecond}) // past ack_wait
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}},
		func(c *config.Dispatcher) { c.AckWait = time.Second })
	users := usersOn("u", 0, 1, 10)
	order := publishUsers(t, e, users, 2, "order_paid")
	testenv.Eventually(t, 40*time.Second, "every event accepted", func() bool {
		_, ev, _ := requestStats(t, vendor, users)
		return ev >= 20
	})
	testenv.Eventually(t, 10*time.Second, "consumer idle", func() bool { return e.Idle("gateway") })
	checkOnceInOrder(t, vendor, order)
	c, err := e.JS.Consumer(context.Background(), e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// Each delivery, a redelivery too, takes a consumer sequence.
	if info.Delivered.Consumer != 20 {
		t.Errorf("the consumer made %d deliveries of 20 events: some were redelivered while they waited", info.Delivered.Consumer)
	}
}

// A shutdown while batches wait in the buffered hand-off: each is sent
// within shutdown_grace or handed back; a new dispatcher delivers the
// rest, none lost, none accepted twice.
func TestRev12ShutdownWithBatchesInTheHandOff(t *testing.T) {
	e := testenv.New(t)
	sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 200, 50*time.Millisecond)
	sink.Concurrency = 2
	sink.MaxAckPending = 200
	sink.Timeout = 5 * time.Second
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 200, Latency: 400 * time.Millisecond})
	opts := func(c *config.Dispatcher) { c.AckWait = 10 * time.Second; c.ShutdownGrace = time.Second }
	d := e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}}, opts)
	users := usersOn("u", 0, 1, 20)
	order := publishUsers(t, e, users, 3, "order_paid")
	testenv.Eventually(t, 10*time.Second, "first requests", func() bool { return vendor.Count(200) >= 2 })
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	before, _, _ := requestStats(t, vendor, users)
	vendor.ClearFault()
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}}, opts)
	testenv.Eventually(t, 30*time.Second, "every event accepted", func() bool {
		_, ev, _ := requestStats(t, vendor, users)
		return ev >= 60
	})
	testenv.Eventually(t, 10*time.Second, "consumer idle", func() bool { return e.Idle("gateway") })
	t.Logf("%d requests before the stop", before)
	checkOnceInOrder(t, vendor, order)
}

// Requests failing during a backlog and its end's drain: what is retried
// in place goes again before its user's later events, with batches
// waiting in the buffered hand-off meanwhile; each event accepted once,
// in order.
func TestRev12RetriesInPlaceDuringABacklogsEndKeepOrder(t *testing.T) {
	t.Parallel() // waits on retries' backoffs; asserts order and once (ack_wait 5 min), its 40 s deadline five times what it takes
	e := testenv.New(t)
	sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 200, time.Minute)
	sink.Concurrency = 4
	sink.MaxAckPending = 300
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}},
		func(c *config.Dispatcher) { c.AckWait = 5 * time.Minute })
	users := usersOn("u", 0, 1, 40)
	vendor.SetFault(emulator.Fault{Status: 503, Count: 30})
	order := publishUsers(t, e, users, 25, "order_paid")
	testenv.Eventually(t, 40*time.Second, "every event accepted", func() bool {
		_, ev, _ := requestStats(t, vendor, users)
		return ev >= 40*25
	})
	testenv.Eventually(t, 10*time.Second, "consumer idle", func() bool { return e.Idle("gateway") })
	if n := vendor.Count(503); n == 0 {
		t.Fatal("no request failed")
	}
	checkOnceInOrder(t, vendor, order)
}

// What the trigger reads: on this nats-server, a filtered pull consumer's
// NumPending is the matching messages after this one, other subjects
// interleaved in the stream left out, and 0 only on the last.
func TestRev12NumPendingOfAFilteredPullConsumer(t *testing.T) {
	e := testenv.New(t)
	ctx := context.Background()
	s, err := e.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "NP", Subjects: []string{"np.>"}})
	if err != nil {
		t.Fatal(err)
	}
	const n = 500
	for i := range n {
		for _, subj := range []string{"np.a", "np.b", "np.b"} {
			if _, err := e.JS.PublishAsync(subj, []byte(fmt.Sprint(i))); err != nil {
				t.Fatal(err)
			}
		}
	}
	<-e.JS.PublishAsyncComplete()
	c, err := s.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "np", FilterSubjects: []string{"np.a"}, AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 64})
	if err != nil {
		t.Fatal(err)
	}
	it, err := c.Messages(jetstream.PullMaxMessages(32))
	if err != nil {
		t.Fatal(err)
	}
	defer it.Stop()
	// first counts first deliveries; a redelivery's NumPending is what
	// has not been delivered yet, as a first delivery's.
	first, redelivered := 0, 0
	for first < n || redelivered < n/7 {
		m, err := it.Next()
		if err != nil {
			t.Fatal(err)
		}
		meta, _ := m.Metadata()
		if meta.NumDelivered == 1 {
			first++
		} else {
			redelivered++
		}
		if want := uint64(n - first); meta.NumPending != want {
			t.Fatalf("after %d first deliveries (delivered %d times): NumPending %d, want %d", first, meta.NumDelivered, meta.NumPending, want)
		}
		if meta.NumDelivered == 1 && first%7 == 0 {
			_ = m.Nak() // redelivered, in the middle
			continue
		}
		_ = m.Ack()
	}
}

// A burst published one event at a time, each publish awaited, as a
// producer does: the consumer keeps up (NumPending 0), and once the hold
// has filled, the next event starts a drain lasting max_wait, during
// which every user's events leave as they come, one per request.
func TestRev12BurstTheConsumerKeepsUpWithStillBatches(t *testing.T) {
	e := testenv.New(t)
	sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 200, 2*time.Second)
	sink.Concurrency = 4
	sink.MaxAckPending = 300
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}},
		func(c *config.Dispatcher) { c.AckWait = time.Minute })
	users := usersOn("u", 0, 1, 40)
	order := map[string][]string{}
	for range 25 {
		for _, u := range users {
			env := testenv.Track(t, "order_paid", u, envelope.WithSubject(u))
			order[u] = append(order[u], env.ID)
			e.Publish(env)
		}
	}
	testenv.Eventually(t, 30*time.Second, "the burst delivered", func() bool {
		_, ev, _ := requestStats(t, vendor, users)
		return ev == 1000
	})
	checkOnceInOrder(t, vendor, order)
	r, ev, singles := requestStats(t, vendor, users)
	t.Logf("burst: %d events in %d requests (%.1f per request, %d of one event)", ev, r, float64(ev)/float64(r), singles)
	if per := float64(ev) / float64(r); per < 4 {
		t.Errorf("a burst that fills the hold went %.1f events per request (%d of %d requests carried one event), want about hold/keys (6.6): a consumer keeping up hands every event over with NumPending 0, so the hold's filling starts a drain of max_wait", per, singles, r)
	}
}
