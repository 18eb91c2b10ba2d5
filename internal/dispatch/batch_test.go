package dispatch_test

// Batching (batch.go) against the real embedded JetStream and the vendor
// emulator: fewer requests, each event exactly once, a bad item alone in
// the dead letters, a user's order kept, a failed batch retried per event.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

func batched(s config.Sink, items int, wait time.Duration) config.Sink {
	s.Batch = &config.Batch{MaxItems: items, MaxWait: wait}
	return s
}

// publishSeq publishes n tracks named name, user u<i%users>, each with a
// seq property (Chabok's items carry no event id); it returns their ids.
func publishSeq(t *testing.T, e *testenv.Env, n, users int, name func(i int) string) []string {
	t.Helper()
	ids := make([]string, n)
	for i := range n {
		u := fmt.Sprintf("u%d", i%users)
		env, err := envelope.New(envelope.TypeTrack, "test", envelope.Track{
			Name: name(i), Properties: map[string]any{"seq": fmt.Sprint(i)},
			User: envelope.User{ID: u, ChabokInstallationID: "inst-" + u, MetrixUserID: "mx-" + u},
		})
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = env.ID
		e.Publish(env)
	}
	return ids
}

// chabokSeqs counts the seq of every item Chabok accepted, and the
// requests it answered.
func chabokSeqs(t *testing.T, e *testenv.Env) (seqs map[string]int, requests int) {
	t.Helper()
	seqs = map[string]int{}
	for _, r := range e.Emu.Vendor(emulator.Chabok).Requests() {
		requests++
		if r.Status != 200 {
			continue
		}
		var items []struct{ EventData map[string]any }
		if err := json.Unmarshal(r.Body, &items); err != nil {
			t.Fatalf("%s: %v", r.Path, err)
		}
		for _, it := range items {
			seqs[it.EventData["seq"].(string)]++
		}
	}
	return seqs, requests
}

func exactlyOnce(t *testing.T, seqs map[string]int, n int, except ...int) {
	t.Helper()
	for i := range n {
		want := 1
		for _, x := range except {
			if i == x {
				want = 0
			}
		}
		if got := seqs[fmt.Sprint(i)]; got != want {
			t.Errorf("event %d accepted %d times, want %d", i, got, want)
		}
	}
}

func TestBatchIsFewerRequestsEachEventOnce(t *testing.T) {
	e := testenv.New(t)
	sink := batched(e.Sink("chabok", emulator.Chabok, nil, nil), 100, 100*time.Millisecond)
	d := e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"chabok"}}})
	const n = 600
	publishSeq(t, e, n, 50, func(int) string { return "order_paid" })
	testenv.Eventually(t, 15*time.Second, "every event delivered", func() bool { return d.Tally.DeliveredTo("chabok") == n })
	testenv.Eventually(t, 5*time.Second, "consumer idle", func() bool { return e.Idle("chabok") })
	seqs, requests := chabokSeqs(t, e)
	exactlyOnce(t, seqs, n)
	if requests > n/20 {
		t.Errorf("%d requests for %d events in batches of up to 100", requests, n)
	}
	for _, r := range e.Emu.Vendor(emulator.Chabok).Requests() {
		if r.Path != "/api/installations/trackBulk" {
			t.Errorf("request to %s", r.Path)
		}
	}
	t.Logf("%d events in %d requests", n, requests)
}

func TestBatchBadItemIsDeadLetteredAlone(t *testing.T) {
	e := testenv.New(t)
	sink := batched(e.Sink("chabok", emulator.Chabok, nil, nil), 100, 200*time.Millisecond)
	e.Emu.Vendor(emulator.Chabok).SetFault(emulator.Fault{Status: 400, Code: "INVALID_EVENT", Match: `"eventName":"poison"`})
	d := e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"chabok"}}})
	const n, bad = 80, 37
	ids := publishSeq(t, e, n, 10, func(i int) string {
		if i == bad {
			return "poison"
		}
		return "order_paid"
	})
	testenv.Eventually(t, 15*time.Second, "the good events delivered", func() bool { return d.Tally.DeliveredTo("chabok") == n-1 })
	testenv.Eventually(t, 5*time.Second, "consumer idle", func() bool { return e.Idle("chabok") })
	seqs, requests := chabokSeqs(t, e)
	exactlyOnce(t, seqs, n, bad)
	recs := deadLetters(t, e, dlq.Filter{})
	if len(recs) != 1 {
		t.Fatalf("%d dead letters, want the bad event's alone", len(recs))
	}
	if r := recs[0]; r.EventID != ids[bad] || r.Reason != outcome.VendorRejected || r.Status != 400 || r.Code != "INVALID_EVENT" || r.Attempts != 1 {
		t.Errorf("dead letter %+v", r)
	}
	t.Logf("%d requests for %d events, one bad", requests, n)
}

func TestBatchTransientFailureRetriesEachEventOnce(t *testing.T) {
	e := testenv.New(t)
	sink := batched(e.Sink("chabok", emulator.Chabok, nil, nil), 100, 100*time.Millisecond)
	e.Emu.Vendor(emulator.Chabok).SetFault(emulator.Fault{Status: 503, Count: 2})
	d := e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"chabok"}}})
	const n = 250
	publishSeq(t, e, n, 20, func(int) string { return "order_paid" })
	testenv.Eventually(t, 20*time.Second, "every event delivered", func() bool { return d.Tally.DeliveredTo("chabok") == n })
	testenv.Eventually(t, 5*time.Second, "consumer idle", func() bool { return e.Idle("chabok") })
	seqs, _ := chabokSeqs(t, e)
	exactlyOnce(t, seqs, n)
	if got := e.Emu.Vendor(emulator.Chabok).Count(503); got != 2 {
		t.Errorf("%d requests failed, want the 2 injected", got)
	}
	// A request that failed as a whole is not charged to its events: its
	// halves are sent again at once (bisection), and the 503s end there.
	_, _, counts := d.Tally.Snapshot()
	if len(counts) != 1 || len(counts[0].DeadLettered) != 0 {
		t.Errorf("tally %+v: want none dead-lettered", counts)
	}
	for _, r := range deadLetters(t, e, dlq.Filter{}) {
		t.Errorf("dead letter %+v", r)
	}
}

// A vendor that fails every batch for longer than bisection lasts opens
// the breaker; the events are retried, uncharged, and delivered once it
// recovers: none dead-lettered with max_attempts 2.
func TestBatchOutageRetriesEachEventOnce(t *testing.T) {
	e := testenv.New(t)
	sink := batched(e.Sink("chabok", emulator.Chabok, nil, nil), 50, 100*time.Millisecond)
	sink.Retry.MaxAttempts = 2
	vendor := e.Emu.Vendor(emulator.Chabok)
	vendor.SetFault(emulator.Fault{Status: 503})
	d := e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"chabok"}}})
	const n = 200
	publishSeq(t, e, n, 20, func(int) string { return "order_paid" })
	testenv.Eventually(t, 10*time.Second, "the breaker opened", func() bool { return vendor.Count(503) >= int(sink.Breaker.FailureThreshold) })
	vendor.ClearFault()
	testenv.Eventually(t, 30*time.Second, "every event delivered", func() bool { return d.Tally.DeliveredTo("chabok") == n })
	testenv.Eventually(t, 5*time.Second, "consumer idle", func() bool { return e.Idle("chabok") })
	seqs, _ := chabokSeqs(t, e)
	exactlyOnce(t, seqs, n)
	if recs := deadLetters(t, e, dlq.Filter{}); len(recs) != 0 {
		t.Errorf("an outage dead-lettered %d events (first %+v)", len(recs), recs[0])
	}
}

func TestBatchKeepsEachUsersOrderAtTheMetrixGateway(t *testing.T) {
	e := testenv.New(t)
	sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 200, 100*time.Millisecond)
	sink.Concurrency = 1 // one batch at a time: a user's order holds across batches too
	d := e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}})
	const users, perUser = 5, 30
	order := map[string][]string{} // user → ids in publish order
	for i := range users * perUser {
		u := fmt.Sprintf("u%d", i%users)
		var env *envelope.Envelope
		var err error
		if i == 2*users+2 { // u2 identifies after two of its actions
			env, err = envelope.New(envelope.TypeIdentify, "test", envelope.Identify{User: envelope.User{ID: u, MetrixUserID: "mx-" + u}})
		} else {
			env = testenv.Track(t, "order_paid", u)
		}
		if err != nil {
			t.Fatal(err)
		}
		order[u] = append(order[u], env.ID)
		e.Publish(env)
	}
	testenv.Eventually(t, 15*time.Second, "every event delivered", func() bool { return d.Tally.DeliveredTo("gateway") == users*perUser })
	seen := map[string][]string{}
	requests := 0
	for _, r := range e.Emu.Vendor(emulator.MetrixGateway).Requests() {
		requests++
		if r.Status != 200 {
			t.Fatalf("request answered %d", r.Status)
		}
		var body struct {
			CustomUserID string
			Messages     []struct {
				Type, ID string
				Time     int64
			}
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatal(err)
		}
		m := body.Messages
		if m[0].Type != "user" || !strings.HasSuffix(m[0].ID, ":user") && m[0].ID != order[body.CustomUserID][2] {
			t.Errorf("request for %s does not register the user first: %+v", body.CustomUserID, m[0])
		}
		for _, msg := range m {
			if !strings.HasSuffix(msg.ID, ":user") {
				seen[body.CustomUserID] = append(seen[body.CustomUserID], msg.ID)
			}
		}
	}
	for u, want := range order {
		if strings.Join(seen[u], " ") != strings.Join(want, " ") {
			t.Errorf("user %s: delivered\n %v\nwant (publish order, each once)\n %v", u, seen[u], want)
		}
	}
	if requests >= users*perUser/2 {
		t.Errorf("%d requests for %d events of %d users", requests, users*perUser, users)
	}
	t.Logf("%d events of %d users in %d requests", users*perUser, users, requests)
}

// Batching to the Metrix gateway with many users and several requests in
// flight: a request carries one user (the API's shape), so a batch must
// gather each user's events over its window to pay, and a user's events
// must reach the vendor in publish order within a request, across
// requests, and across a retry (a throttled request, a 503). Before
// per-user batches a batch of 200 over 200 users became about one request
// per event, and concurrent batches and scheduled retries reordered users.
func TestMetrixGatewayBatchGroupsByUserAndKeepsOrder(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault *emulator.Fault
	}{
		{name: "steady"},
		{name: "throttled", fault: &emulator.Fault{Status: 429, Count: 4}},
		{name: "failing", fault: &emulator.Fault{Status: 503, Count: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := testenv.New(t)
			sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 200, 500*time.Millisecond)
			sink.Concurrency = 8
			sink.MaxAckPending = 4000
			vendor := e.Emu.Vendor(emulator.MetrixGateway)
			if tc.fault != nil {
				vendor.SetFault(*tc.fault)
			}
			d := e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}})
			const users, perUser = 200, 15
			order := publishBacklog(t, e, users, perUser)
			testenv.Eventually(t, 30*time.Second, "every event delivered", func() bool { return d.Tally.DeliveredTo("gateway") == users*perUser })
			testenv.Eventually(t, 5*time.Second, "consumer idle", func() bool { return e.Idle("gateway") })
			reqUsers, reqIDs := gatewayBodies(t, vendor)
			accepted := len(reqUsers)
			checkUsersOrder(t, order, reqUsers, reqIDs)
			perRequest := float64(users*perUser) / float64(max(accepted, 1))
			if perRequest < 4 {
				t.Errorf("%.1f events per accepted request (%d requests for %d events of %d users), want at least 4",
					perRequest, accepted, users*perUser, users)
			}
			t.Logf("%d events of %d users in %d accepted requests (%.1f each), %d requests in all",
				users*perUser, users, accepted, perRequest, vendor.Count(0))
		})
	}
}

// A keyed batcher holds a message reduced to its body, subject, headers
// and ack handle (held.go), and makes its delivery again when its batch
// leaves: a dead letter of a held event is the original message all the
// same: the producer's headers, every value (the dead-letter store keeps
// no Nats-* header, held or not), the body byte for byte, its subject,
// origin and receipt time; the next event, held behind it, is delivered.
func TestKeyedBatchDeadLetterOfAHeldEventIsTheOriginalMessage(t *testing.T) {
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 400, Code: "BAD_REQUEST", Count: 1})
	sink := batched(e.Sink("gateway", emulator.MetrixGateway, slugs, nil), 10, 300*time.Millisecond)
	sink.Concurrency = 1
	e.Start([]config.Sink{sink}, gatewayRoute)

	bad := testenv.Track(t, "order_paid", "held-user")
	msg, ack := publishNoted(t, e, bad)
	next := testenv.Track(t, "order_paid", "other-user")
	e.Publish(next)

	testenv.Eventually(t, 15*time.Second, "the rejected event dead-lettered", func() bool { return len(deadLetters(t, e, dlq.Filter{})) == 1 })
	rec := deadLetters(t, e, dlq.Filter{})[0]
	if rec.EventID != bad.ID || rec.Reason != outcome.VendorRejected {
		t.Errorf("dead letter of %s (%s), want %s rejected", rec.EventID, rec.Reason, bad.ID)
	}
	if string(rec.Data) != string(msg.Data) {
		t.Errorf("dead letter's body %q, want the message's %q", rec.Data, msg.Data)
	}
	if got := rec.Header.Values("X-Note"); fmt.Sprint(got) != "[keep me]" {
		t.Errorf("dead letter's headers %v, want X-Note [keep me]", rec.Header)
	}
	if rec.Subject != msg.Subject || rec.Origin != ack.Sequence || rec.Received.IsZero() {
		t.Errorf("dead letter's subject %q, origin %d, received %v; want %q, %d, the receipt", rec.Subject, rec.Origin, rec.Received, msg.Subject, ack.Sequence)
	}
	testenv.Eventually(t, 15*time.Second, "the other user's event delivered", allDelivered(t, e, []string{next.ID}))
}

// publishNoted publishes env as a producer adding its own multi-valued
// header (X-Note: keep, me) would, with its id as Nats-Msg-Id, and returns
// the message and the stream's ack: what a dead letter and its replay must
// carry on.
func publishNoted(t *testing.T, e *testenv.Env, env *envelope.Envelope) (*nats.Msg, *jetstream.PubAck) {
	t.Helper()
	raw, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: e.Topo.EventSubjectFor(env.Type, env.PartitionKey()), Data: raw,
		Header: nats.Header{"X-Note": {"keep", "me"}, "Nats-Msg-Id": {env.ID}}}
	ack, err := e.JS.PublishMsg(context.Background(), msg)
	if err != nil {
		t.Fatal(err)
	}
	return msg, ack
}
