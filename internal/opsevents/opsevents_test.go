package opsevents_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/app"
	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/opsevents"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// observer is a process's tally that also counts its ops events'
// outcomes (opsevents.Counts), as the metrics do.
type observer struct {
	*dispatch.Tally
	mu  sync.Mutex
	ops map[string]int // type/outcome → count
}

func (o *observer) OpsEvent(typ, outcome string) {
	o.mu.Lock()
	o.ops[typ+"/"+outcome]++
	o.mu.Unlock()
}

func (o *observer) count(typ, outcome string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.ops[typ+"/"+outcome]
}

// process is a dispatcher built as dispatcher run builds it (app.Start),
// so the ops events publisher is composed where it is in production.
type process struct {
	obs  *observer
	stop func()
}

func start(t *testing.T, e *testenv.Env, sinks []config.Sink, routes []config.Route, ops config.OpsEvents) *process {
	t.Helper()
	cfg := e.Config(sinks, routes)
	cfg.NATS.URL = e.Server.ClientURL()
	cfg.OpsEvents = ops
	obs := &observer{Tally: dispatch.NewTally(), ops: map[string]int{}}
	ready := make(chan struct{})
	p, err := app.Start(context.Background(), cfg, app.Options{Observer: obs, Ready: func() { close(ready) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("dispatcher did not start: %v", err)
	case <-time.After(60 * time.Second):
		t.Fatal("dispatcher did not start in 60s")
	}
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Error("dispatcher did not stop in 30s")
			}
			p.Close()
		})
	}
	t.Cleanup(stop)
	return &process{obs: obs, stop: stop}
}

func enabled() config.OpsEvents {
	return config.OpsEvents{Enabled: true, PerMinute: 600, Burst: 100, Buffer: 1024}
}

// vendor is an HTTP endpoint a webhook sink delivers to: it answers
// status (200 if 0) and keeps what it was sent.
type vendor struct {
	status atomic.Int32
	fails  atomic.Int32 // this many requests are answered 503 first
	mu     sync.Mutex
	bodies [][]byte
}

func (v *vendor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	v.mu.Lock()
	v.bodies = append(v.bodies, b)
	v.mu.Unlock()
	if v.fails.Add(-1) >= 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if s := v.status.Load(); s != 0 {
		w.WriteHeader(int(s))
		_, _ = w.Write([]byte(`{"error":{"code":"REFUSED"}}`))
		return
	}
	w.WriteHeader(http.StatusOK)
}

// received are the CloudEvents the vendor was sent, by type.
func (v *vendor) received(t *testing.T) map[string][]*envelope.Event {
	t.Helper()
	v.mu.Lock()
	defer v.mu.Unlock()
	out := map[string][]*envelope.Event{}
	for _, b := range v.bodies {
		ev, err := envelope.Parse(b, 0)
		if err != nil {
			t.Fatalf("the vendor was sent %s: %v", b, err)
		}
		out[ev.Type] = append(out[ev.Type], ev)
	}
	return out
}

func (v *vendor) requests() int { v.mu.Lock(); defer v.mu.Unlock(); return len(v.bodies) }

// hook is a webhook sink delivering to a vendor of its own.
func hook(t *testing.T, e *testenv.Env, name string, status int) (config.Sink, *vendor) {
	t.Helper()
	v := &vendor{}
	v.status.Store(int32(status))
	srv := httptest.NewServer(v)
	t.Cleanup(srv.Close)
	s := e.Sink(name, emulator.Webhook, nil, map[string]any{"code": "error.code"})
	s.BaseURL = srv.URL
	return s, v
}

// stored reads the ops events in the events stream, in order, with their
// subjects. It reads with an ordered consumer, which the server removes
// after the test (not a product path).
func stored(t *testing.T, e *testenv.Env) (events []*envelope.Event, subjects []string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.JS.OrderedConsumer(ctx, e.Topo.EventsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{e.Streams.SubjectPrefix + ".events.ops.>"}})
	if err != nil {
		t.Fatal(err)
	}
	for {
		batch, err := c.Fetch(100, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			ev, err := envelope.Parse(m.Data(), 0)
			if err != nil {
				t.Fatalf("stored ops event %s: %v", m.Data(), err)
			}
			events, subjects = append(events, ev), append(subjects, m.Subject())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, jetstream.ErrNoMessages) {
			t.Fatal(err)
		}
		if n == 0 {
			return events, subjects
		}
	}
}

// ofType are the stored ops events of one type.
func ofType(t *testing.T, e *testenv.Env, typ string) []*envelope.Event {
	t.Helper()
	evs, _ := stored(t, e)
	var out []*envelope.Event
	for _, ev := range evs {
		if ev.Type == typ {
			out = append(out, ev)
		}
	}
	return out
}

func data(t *testing.T, ev *envelope.Event) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(ev.Data, &m); err != nil {
		t.Fatalf("data of %s: %v", ev.Type, err)
	}
	return m
}

// want checks data's fields against fields (numbers as JSON has them).
func want(t *testing.T, ev *envelope.Event, fields map[string]any) {
	t.Helper()
	d := data(t, ev)
	for k, w := range fields {
		if got, ok := d[k]; !ok || got != w {
			t.Errorf("%s: data.%s = %v, want %v (data %s)", ev.Type, k, got, w, ev.Data)
		}
	}
}

// A vendor's rejection makes one chapar.ops.dead_lettered event, stored
// on its type's subject, about the sink (its CloudEvents subject), with
// the dead letter's particulars; a route without types (the sink's
// catch-all) does not send it back to the sink.
func TestDeadLetterPublishesAnOpsEvent(t *testing.T) {
	e := testenv.New(t)
	shop, v := hook(t, e, "shop", http.StatusBadRequest)
	p := start(t, e, []config.Sink{shop}, []config.Route{{Sinks: []string{"shop"}}}, enabled())
	env := testenv.Track(t, "order_paid", "u1")
	e.Publish(env)

	testenv.Eventually(t, 10*time.Second, "the dead_lettered ops event stored", func() bool {
		return p.obs.count(envelope.TypeOpsDeadLettered, opsevents.Published) == 1
	})
	evs, subjects := stored(t, e)
	if len(evs) != 1 || evs[0].Type != envelope.TypeOpsDeadLettered {
		t.Fatalf("stored ops events %v, want one chapar.ops.dead_lettered", evs)
	}
	if subjects[0] != "chapar.events.ops.dead_lettered" || evs[0].Subject != "shop" || !strings.HasPrefix(evs[0].Source, "chapar://dispatcher/") {
		t.Errorf("subject %s, CloudEvents subject %q, source %q", subjects[0], evs[0].Subject, evs[0].Source)
	}
	want(t, evs[0], map[string]any{"sink": "shop", "reason": "vendor_rejected", "status": 400.0, "code": "REFUSED",
		"event_id": env.ID, "event_type": envelope.TypeTrack, "attempts": 1.0, "replays": 0.0})
	testenv.Eventually(t, 10*time.Second, "the sink idle", func() bool { return e.Idle("shop") })
	if n := v.requests(); n != 1 {
		t.Errorf("the sink was sent %d requests, want 1: its own dead letter's news went to it", n)
	}
}

// Routed to a webhook, an ops event reaches it as a CloudEvent through
// Chapar itself; the sink it is about is not sent it even when the route
// names it (the loop guard), and when the webhook itself fails to take an
// ops event, that dead letter makes no ops event (no cascade).
func TestOpsEventsRouteToAWebhookWithoutLoops(t *testing.T) {
	e := testenv.New(t)
	shop, shopV := hook(t, e, "shop", http.StatusBadRequest)
	chat, chatV := hook(t, e, "chat", 0)
	routes := []config.Route{
		{Types: []string{envelope.TypeTrack}, Sinks: []string{"shop"}},
		{Types: []string{envelope.TypeOpsDeadLettered}, Sinks: []string{"chat", "shop"}},
	}
	p := start(t, e, []config.Sink{shop, chat}, routes, enabled())
	first := testenv.Track(t, "order_paid", "u1")
	e.Publish(first)

	var got []*envelope.Event
	testenv.Eventually(t, 10*time.Second, "the chat webhook sent the dead_lettered event", func() bool {
		got = chatV.received(t)[envelope.TypeOpsDeadLettered]
		return len(got) == 1
	})
	want(t, got[0], map[string]any{"sink": "shop", "reason": "vendor_rejected", "event_id": first.ID, "status": 400.0})
	if got[0].Subject != "shop" {
		t.Errorf("CloudEvents subject %q, want shop", got[0].Subject)
	}

	// The chat endpoint now refuses: its dead letter of the ops event
	// must not become an ops event (routed to shop, which refuses, ...).
	chatV.status.Store(http.StatusUnprocessableEntity)
	second := testenv.Track(t, "order_paid", "u2")
	e.Publish(second)
	testenv.Eventually(t, 15*time.Second, "both sinks through their events", func() bool {
		return p.obs.count(envelope.TypeOpsDeadLettered, opsevents.Published) >= 2 && e.Idle("shop", "chat") &&
			len(chatV.received(t)[envelope.TypeOpsDeadLettered]) == 2
	})
	// A marker through the same queue: once it is stored, so is anything
	// queued before it (one publisher, in order), a cascade included.
	if err := e.Topo.SetOperatorPause(context.Background(), e.JS, "chat", topologyPause(true)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the pause's ops event stored", func() bool {
		return len(ofType(t, e, envelope.TypeOpsSinkPaused)) == 1
	})
	dead := ofType(t, e, envelope.TypeOpsDeadLettered)
	if len(dead) != 2 {
		t.Fatalf("%d dead_lettered ops events, want 2 (the two track events at shop)", len(dead))
	}
	for _, ev := range dead {
		if ev.Subject != "shop" {
			t.Errorf("a dead_lettered ops event about %q: the failure to deliver an ops event made one", ev.Subject)
		}
	}
	if got := shopV.received(t); len(got) != 1 || len(got[envelope.TypeTrack]) != 2 {
		t.Errorf("shop was sent %v, want its 2 track events only", keys(got))
	}
}

func keys(m map[string][]*envelope.Event) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = len(v)
	}
	return out
}

func topologyPause(paused bool) topology.OperatorPause {
	return topology.OperatorPause{Paused: paused, At: time.Now().UTC(), By: "test"}
}
