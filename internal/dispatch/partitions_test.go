package dispatch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// webhookIDs lists the envelope ids the webhook emulator accepted, in the
// order it accepted them.
func webhookIDs(t *testing.T, e *testenv.Env) []string {
	t.Helper()
	var out []string
	for _, r := range e.Emu.Vendor(emulator.Webhook).Requests() {
		if r.Status/100 != 2 {
			continue
		}
		var body struct{ ID string }
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatalf("webhook body %s: %v", r.Body, err)
		}
		out = append(out, body.ID)
	}
	return out
}

// partitionedTrack is user u's n-th event, keyed by the user.
func partitionedTrack(t *testing.T, u, n int) *envelope.Envelope {
	user := fmt.Sprintf("user-%d", u)
	return testenv.Track(t, "order_paid", user, envelope.WithSubject(user), envelope.WithID(fmt.Sprintf("%s/%02d", user, n)))
}

// Over three partitions and two replicas, every event reaches every sink
// routed to it exactly once, every partition carries some, and every
// partition's consumer ends idle.
func TestPartitionsDeliverEveryEventOnceToEverySink(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.NewPartitioned(t, 3)
	sinks := []config.Sink{e.Sink("chabok", emulator.Chabok, nil, nil), e.Sink("hook", emulator.Webhook, nil, nil)}
	routes := []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"chabok", "hook"}}}
	a, b := e.Start(sinks, routes), e.Start(sinks, routes)
	const users, each = 20, 3
	for n := range each {
		for u := range users {
			e.Publish(partitionedTrack(t, u, n))
		}
	}
	const total = users * each
	for _, sink := range []string{"chabok", "hook"} {
		testenv.Eventually(t, 20*time.Second, fmt.Sprint(total, " deliveries to ", sink), func() bool {
			return a.Tally.DeliveredTo(sink)+b.Tally.DeliveredTo(sink) >= total
		})
	}
	testenv.Eventually(t, 10*time.Second, "every partition idle", func() bool { return e.Idle("chabok", "hook") })

	seen := map[string]int{}
	for _, id := range webhookIDs(t, e) {
		seen[id]++
	}
	for u := range users {
		for n := range each {
			if id := partitionedTrack(t, u, n).ID; seen[id] != 1 {
				t.Errorf("webhook got %s %d times, want once", id, seen[id])
			}
		}
	}
	if got := e.Emu.Vendor(emulator.Chabok).Count(200); got != total {
		t.Errorf("chabok accepted %d requests, want %d", got, total)
	}
	if got := a.Tally.DeliveredTo("hook") + b.Tally.DeliveredTo("hook"); got != total {
		t.Errorf("replicas counted %d webhook deliveries, want %d", got, total)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var held uint64
	for _, name := range e.Topo.EventsStreams() {
		st, err := e.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.LastSeq == 0 {
			t.Errorf("%s never held an event: the keys did not spread", name)
		}
		// Limits retention: acked events stay for max_age; what drains
		// is each consumer (e.Idle above).
		held += info.State.Msgs
	}
	if held != total {
		t.Errorf("the partitions hold %d events after every sink acked, want the %d published", held, total)
	}
}

// With one worker, a user's events reach the vendor in publish order
// though three partitions feed that worker at once: a key never leaves
// its partition, and each partition is consumed in order. (Order with
// more workers or replicas is the per-user order feature's.)
func TestPartitionsKeepEachKeyInOrder(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.NewPartitioned(t, 3)
	hook := e.Sink("hook", emulator.Webhook, nil, nil)
	hook.Concurrency = 1
	d := e.Start([]config.Sink{hook}, []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"hook"}}})
	const users, each = 9, 10
	for n := range each {
		for u := range users {
			e.Publish(partitionedTrack(t, u, n))
		}
	}
	testenv.Eventually(t, 20*time.Second, "every delivery", func() bool { return d.Tally.DeliveredTo("hook") >= users*each })
	next := map[string]int{}
	for _, id := range webhookIDs(t, e) {
		var u, n int
		if _, err := fmt.Sscanf(id, "user-%d/%d", &u, &n); err != nil {
			t.Fatalf("id %q: %v", id, err)
		}
		user := fmt.Sprintf("user-%d", u)
		if n != next[user] {
			t.Errorf("%s: got event %d, want %d next", user, n, next[user])
		}
		next[user] = n + 1
	}
	for u := range users {
		if got := next[fmt.Sprintf("user-%d", u)]; got != each {
			t.Errorf("user-%d: %d events arrived, want %d", u, got, each)
		}
	}
}

// An ordered sink over three partitions, two replicas: one orderer per
// partition consumer, each pinned on its own, and every key reaches the
// vendor in publish order, across a retry.
func TestOrderedSinkOverPartitionsKeepsEachKeyInOrder(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.NewPartitioned(t, 3)
	k := newKeyed(t, []string{"u0", "u1", "u2", "u3", "u4", "u5"}, 8)
	e.Emu.Vendor(emulator.MetrixGateway).SetFault(emulator.Fault{Status: 503, Count: 2, Match: k.ids["u0"][0]})
	sink := orderedSink(e)
	a := e.Start([]config.Sink{sink}, gatewayRoute)
	b := e.Start([]config.Sink{sink}, gatewayRoute)
	k.publish(e, 0, len(k.envs))
	testenv.Eventually(t, 30*time.Second, "every event delivered", k.delivered(t, e))
	k.checkOrder(t, e, false)
	// A replica counts a delivery once the vendor has answered and the
	// ack is sent, a moment after the vendor recorded the request.
	counted := func() int { return a.Tally.DeliveredTo("gateway") + b.Tally.DeliveredTo("gateway") }
	testenv.Eventually(t, 5*time.Second, "every delivery counted", func() bool { return counted() >= len(k.envs) })
	if got := counted(); got != len(k.envs) {
		t.Errorf("replicas counted %d deliveries, want %d", got, len(k.envs))
	}
	partitions := map[int]bool{}
	for _, key := range k.keys {
		partitions[envelope.Partition(key, 3)] = true
	}
	if len(partitions) < 2 {
		t.Fatalf("the keys fell in %d partition(s): the test does not exercise partitions", len(partitions))
	}
}

// The first event of each of three partitions has sequence 1 in its
// stream; all three fail once and are retried. A retry is named by its
// origin, so with bare sequences the three retries would share one
// schedule subject and two would be lost: the origin carries the
// partition, and each event arrives once.
func TestRetriesOfEqualSequencesInDifferentPartitionsAreKeptApart(t *testing.T) {
	t.Parallel() // waits on retries' backoffs, not on the CPU
	e := testenv.NewPartitioned(t, 3)
	var users []string
	for u := 0; len(users) < 3; u++ {
		user := fmt.Sprintf("user-%d", u)
		if envelope.Partition(user, 3) == len(users) {
			users = append(users, user)
		}
	}
	vendor := e.Emu.Vendor(emulator.Webhook)
	vendor.SetFault(emulator.Fault{Status: 503, Count: 3})
	d := e.Start([]config.Sink{e.Sink("hook", emulator.Webhook, nil, nil)}, []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"hook"}}})
	var ids []string
	for _, user := range users {
		env := testenv.Track(t, "order_paid", user, envelope.WithSubject(user))
		if ack := e.Publish(env); ack.Sequence != 1 {
			t.Fatalf("%s is #%d in %s, want #1", user, ack.Sequence, ack.Stream)
		}
		ids = append(ids, env.ID)
	}
	testenv.Eventually(t, 20*time.Second, "three deliveries", func() bool { return d.Tally.DeliveredTo("hook") >= 3 })
	testenv.Eventually(t, 10*time.Second, "nothing left", func() bool { return e.Idle("hook") })
	if got := vendor.Count(503); got != 3 {
		t.Fatalf("%d failed attempts, want 3 (one per event)", got)
	}
	seen := map[string]int{}
	for _, id := range webhookIDs(t, e) {
		seen[id]++
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("%s delivered %d times after its retry, want once", id, seen[id])
		}
	}
}
