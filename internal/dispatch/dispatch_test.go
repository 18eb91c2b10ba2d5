package dispatch_test

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

var slugs = map[string]string{"order_paid": "aewqd", "signup": "signp", "level_up": "zzzzz"}

// gatewayIDs returns the envelope ids the Metrix gateway accepted, with
// how many times each arrived.
func gatewayIDs(t *testing.T, e *testenv.Env) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, r := range e.Emu.Vendor(emulator.MetrixGateway).Requests() {
		if r.Status != 200 {
			continue
		}
		var body struct {
			Messages []struct{ Type, ID string }
		}
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatal(err)
		}
		for _, m := range body.Messages {
			if m.Type != "user" {
				out[m.ID]++
			}
		}
	}
	return out
}

func consumerIdle(t *testing.T, e *testenv.Env, sink string) bool {
	t.Helper()
	return e.Idle(sink)
}

func TestDeliversAndAcks(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	sink := e.Sink("chabok", emulator.Chabok, nil, nil)
	d := e.Start([]config.Sink{sink}, []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"chabok"}}})
	const n = 25
	for i := range n {
		e.Publish(testenv.Track(t, "order_paid", "u"+string(rune('a'+i))))
	}
	vendor := e.Emu.Vendor(emulator.Chabok)
	testenv.Eventually(t, 10*time.Second, "25 deliveries", func() bool { return d.Tally.DeliveredTo("chabok") == n })
	testenv.Eventually(t, 5*time.Second, "consumer idle", func() bool { return consumerIdle(t, e, "chabok") })
	if got := vendor.Count(200); got != n {
		t.Fatalf("vendor accepted %d requests, want %d", got, n)
	}
	// Limits retention: acked events stay for max_age
	// (TestAckedEventsStayInTheStream); the consumer is what is drained.
	s, _ := e.JS.Stream(context.Background(), e.Topo.EventsStream())
	info, _ := s.Info(context.Background())
	if info.State.Msgs != n {
		t.Errorf("the stream holds %d events after ack, want the %d published", info.State.Msgs, n)
	}
	r := vendor.Requests()[0]
	if r.Path != "/api/installations/track" || r.Header.Get("X-Access-Token") != "demo-chabok-token" {
		t.Errorf("request %s with token %q", r.Path, r.Header.Get("X-Access-Token"))
	}
	if ua := r.Header.Get("User-Agent"); !strings.HasPrefix(ua, "Chapar/") {
		t.Errorf("User-Agent %q", ua)
	}
}

func TestThreeSinksOneFailsDeliversOthersExactlyOnce(t *testing.T) {
	t.Parallel() // waits on retries' backoffs, not on the CPU
	e := testenv.New(t)
	sinks := []config.Sink{
		e.Sink("chabok", emulator.Chabok, nil, nil),
		e.Sink("metrix", emulator.MetrixS2S, slugs, nil),
		e.Sink("gateway", emulator.MetrixGateway, slugs, nil),
	}
	s2s := e.Emu.Vendor(emulator.MetrixS2S)
	s2s.SetFault(emulator.Fault{Status: 503})
	d := e.Start(sinks, []config.Route{{Names: []string{"order_*"}, Sinks: []string{"chabok", "metrix", "gateway"}}})
	const n = 10
	for i := range n {
		e.Publish(testenv.Track(t, "order_paid", "u"+string(rune('a'+i))))
	}
	testenv.Eventually(t, 10*time.Second, "healthy sinks delivered", func() bool {
		return d.Tally.DeliveredTo("chabok") == n && d.Tally.DeliveredTo("gateway") == n
	})
	testenv.Eventually(t, 10*time.Second, "the failing sink retried", func() bool { return s2s.Count(503) >= 3 })
	s2s.ClearFault()
	testenv.Eventually(t, 15*time.Second, "failed sink recovered", func() bool { return d.Tally.DeliveredTo("metrix") == n })
	for _, sink := range []string{"chabok", "metrix", "gateway"} {
		testenv.Eventually(t, 5*time.Second, sink+" idle", func() bool { return consumerIdle(t, e, sink) })
	}
	if got := e.Emu.Vendor(emulator.Chabok).Count(0); got != n {
		t.Errorf("chabok got %d requests, want exactly %d", got, n)
	}
	for id, times := range gatewayIDs(t, e) {
		if times != 1 {
			t.Errorf("gateway got event %s %d times", id, times)
		}
	}
	if got := s2s.Count(200); got != n {
		t.Errorf("metrix accepted %d after recovery, want %d", got, n)
	}
	recs, err := dlq.NewStore(e.JS, e.Topo).List(context.Background(), dlq.Filter{}, 0)
	if err != nil || len(recs) != 0 {
		t.Errorf("a transient outage dead-lettered %d events (%v)", len(recs), err)
	}
}

func TestDeadLetterCarriesEnvelopeAndWhy(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	d := e.Start([]config.Sink{e.Sink("gateway", emulator.MetrixGateway, slugs, nil)},
		[]config.Route{{Sinks: []string{"gateway"}}})
	env := testenv.Track(t, "level_up", "u1") // slug zzzzz is not in the "dashboard"
	raw, _ := env.Marshal()
	e.Publish(env)
	store := dlq.NewStore(e.JS, e.Topo)
	var recs []*dlq.Record
	testenv.Eventually(t, 10*time.Second, "a dead letter", func() bool {
		recs, _ = store.List(context.Background(), dlq.Filter{}, 0)
		return len(recs) == 1
	})
	r := recs[0]
	if r.Sink != "gateway" || r.Reason != "vendor_rejected" || r.Status != 404 || r.Code != "EVENT_TYPE_DOES_NOT_EXIST" {
		t.Errorf("record %+v", r)
	}
	if r.Attempts != 1 || r.EventID != env.ID || r.EventType != envelope.TypeTrack {
		t.Errorf("attempts %d id %s type %s", r.Attempts, r.EventID, r.EventType)
	}
	if r.FirstAttempt.IsZero() || r.LastAttempt.Before(r.FirstAttempt) || r.Error == "" {
		t.Errorf("times %v %v error %q", r.FirstAttempt, r.LastAttempt, r.Error)
	}
	if !bytes.Equal(r.Data, raw) {
		t.Errorf("dead letter changed the envelope:\n%s\n%s", r.Data, raw)
	}
	if got := e.Emu.Vendor(emulator.MetrixGateway).Count(0); got != 1 {
		t.Errorf("a permanent error was attempted %d times, want 1", got)
	}
	if d.Tally.DeliveredTo("gateway") != 0 {
		t.Error("counted a 404 as delivered")
	}
}

func TestMalformedEnvelopesAreDeadLetteredAndStreamFlows(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	d := e.Start([]config.Sink{e.Sink("chabok", emulator.Chabok, nil, nil)}, []config.Route{{Sinks: []string{"chabok"}}})
	subject := e.Topo.EventSubject(envelope.TypeTrack)
	valid, _ := testenv.Track(t, "order_paid", "u1").Marshal()
	var asMap map[string]any
	_ = json.Unmarshal(valid, &asMap)
	edit := func(f func(map[string]any)) []byte {
		m := map[string]any{}
		for k, v := range asMap {
			m[k] = v
		}
		f(m)
		b, _ := json.Marshal(m)
		return b
	}
	bad := map[string][]byte{
		"not JSON":         []byte("order_paid,u1"),
		"missing required": edit(func(m map[string]any) { delete(m, "source"); delete(m, "specversion") }),
		"unknown type":     edit(func(m map[string]any) { m["type"] = "chapar.click" }),
		"wrong field type": edit(func(m map[string]any) { m["data"] = map[string]any{"name": 42, "user": map[string]any{"id": "u"}} }),
		"oversized":        append(append([]byte(`{"pad":"`), bytes.Repeat([]byte("x"), e.Topo.MaxEnvelopeBytes())...), '"', '}'),
	}
	for name, raw := range bad {
		e.PublishRaw(subject, "bad-"+name, raw)
	}
	good := testenv.Track(t, "order_paid", "u2")
	e.Publish(good)
	testenv.Eventually(t, 10*time.Second, "the valid event after the bad ones", func() bool { return d.Tally.DeliveredTo("chabok") == 1 })
	store := dlq.NewStore(e.JS, e.Topo)
	var recs []*dlq.Record
	testenv.Eventually(t, 5*time.Second, "five dead letters", func() bool {
		recs, _ = store.List(context.Background(), dlq.Filter{Reason: "invalid_envelope"}, 0)
		return len(recs) == len(bad)
	})
	for _, r := range recs {
		if r.Sink != dlq.NoSink || r.Error == "" {
			t.Errorf("record %+v", r)
		}
	}
	var oversize bool
	for _, r := range recs {
		oversize = oversize || strings.Contains(r.Error, "the maximum is 983040")
	}
	if !oversize {
		t.Error("no dead letter names the size limit")
	}
}

func TestUnroutedIsCountedNotDeadLettered(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	d := e.Start([]config.Sink{e.Sink("chabok", emulator.Chabok, nil, nil)},
		[]config.Route{{Names: []string{"order_*"}, Sinks: []string{"chabok"}}})
	e.Publish(testenv.Track(t, "page_view", "u1"))
	e.Publish(testenv.Track(t, "order_paid", "u1"))
	testenv.Eventually(t, 10*time.Second, "routed event", func() bool { return d.Tally.DeliveredTo("chabok") == 1 })
	testenv.Eventually(t, 5*time.Second, "unrouted counted", func() bool { _, u, _ := d.Tally.Snapshot(); return u == 1 })
}

func TestDestinationsOverrideRoutes(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	d := e.Start([]config.Sink{e.Sink("chabok", emulator.Chabok, nil, nil), e.Sink("gateway", emulator.MetrixGateway, slugs, nil)},
		[]config.Route{{Sinks: []string{"chabok"}}})
	e.Publish(testenv.Track(t, "order_paid", "u1", envelope.WithDestinations("gateway")))
	testenv.Eventually(t, 10*time.Second, "delivered to the destination", func() bool { return d.Tally.DeliveredTo("gateway") == 1 })
	if n := e.Emu.Vendor(emulator.Chabok).Count(0); n != 0 {
		t.Errorf("routing table used despite destinations: chabok got %d", n)
	}
}

func TestProducerRetryIsDeduplicated(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	d := e.Start([]config.Sink{e.Sink("gateway", emulator.MetrixGateway, slugs, nil)}, []config.Route{{Sinks: []string{"gateway"}}})
	env := testenv.Track(t, "order_paid", "u1")
	first := e.Publish(env)
	for range 3 {
		if again := e.Publish(env); !again.Duplicate || again.Sequence != first.Sequence {
			t.Fatalf("republish not de-duplicated: %+v", again)
		}
	}
	testenv.Eventually(t, 10*time.Second, "delivery", func() bool { return d.Tally.DeliveredTo("gateway") == 1 })
	time.Sleep(300 * time.Millisecond)
	if ids := gatewayIDs(t, e); ids[env.ID] != 1 || len(ids) != 1 {
		t.Errorf("vendor got %v", ids)
	}
}

func TestKilledDispatcherLosesNothing(t *testing.T) {
	t.Parallel() // waits out ack_wait for the killed replica's redeliveries; asserts nothing lost
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 200, Latency: 400 * time.Millisecond})
	first := e.Start([]config.Sink{sink}, routes, func(c *config.Dispatcher) { c.AckWait = 2 * time.Second })
	const n = 30
	ids := publishTracks(t, e, n, "order_paid")
	testenv.Eventually(t, 10*time.Second, "work in flight", func() bool { return vendor.Count(0) >= 2 })
	first.Kill()
	vendor.ClearFault()
	second := e.Start([]config.Sink{sink}, routes, func(c *config.Dispatcher) { c.AckWait = 2 * time.Second })
	testenv.Eventually(t, 20*time.Second, "every event delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 5*time.Second, "consumer idle", func() bool { return consumerIdle(t, e, "gateway") })
	if second.Tally.DeliveredTo("gateway") == 0 {
		t.Error("the second instance delivered nothing; the test did not exercise redelivery")
	}
}

func TestGracefulDrainHandsBackAndLosesNothing(t *testing.T) {
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 200, Latency: 300 * time.Millisecond})
	first := e.Start([]config.Sink{sink}, routes)
	const n = 40
	ids := publishTracks(t, e, n, "order_paid")
	testenv.Eventually(t, 10*time.Second, "work in flight", func() bool { return vendor.Count(0) >= 4 })
	start := time.Now()
	if err := first.Stop(); err != nil {
		t.Fatalf("drain: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second+time.Second {
		t.Errorf("drain took %s, beyond the 3s grace", took)
	}
	delivered := first.Tally.DeliveredTo("gateway")
	if delivered == 0 || delivered == n {
		t.Fatalf("first instance delivered %d of %d; the test needs a drain mid-stream", delivered, n)
	}
	vendor.ClearFault()
	second := e.Start([]config.Sink{sink}, routes)
	// Handed-back work is redelivered at once: well before ack_wait (5s)
	// would have returned it.
	testenv.Eventually(t, 4*time.Second, "the rest delivered by a new instance", allDelivered(t, e, ids))
	// The vendor records a request before Chapar sees its answer and acks:
	// wait for the second instance to count its last deliveries.
	testenv.Eventually(t, 5*time.Second, "the second instance to deliver what the first handed back", func() bool {
		return second.Tally.DeliveredTo("gateway") >= n-delivered
	})
}
