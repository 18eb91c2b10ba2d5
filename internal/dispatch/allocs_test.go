package dispatch

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// What the path of every event allocates when there is nothing to record:
// exact counts, not timings (docs/benchmarks.md, "Allocations per event").

// With tracing off an attempt's span drops everything it is given: ending
// it builds nothing, whatever the attempt's outcome.
func TestEndAttemptWithTracingOffAllocatesNothing(t *testing.T) {
	_, span := noop.NewTracerProvider().Tracer("t").Start(context.Background(), "x")
	if span.IsRecording() {
		t.Fatal("the no-op span records")
	}
	failed := &sinks.Error{Reason: outcome.RetriesExhausted, Transient: true, Status: 503, Code: "DOWN", Message: "down"}
	for _, tc := range []struct {
		name string
		span trace.Span
		v    Verdict
		err  error
	}{
		{"delivered", span, Verdict{Action: Ack}, nil},
		{"failed", span, Verdict{Action: Retry, Reason: outcome.RetriesExhausted}, failed},
		{"no span", trace.SpanFromContext(context.Background()), Verdict{Action: Ack}, nil},
	} {
		if n := testing.AllocsPerRun(100, func() { endAttempt(tc.span, tc.v, tc.err) }); n != 0 {
			t.Errorf("%s: endAttempt allocates %.0f times per attempt, want 0", tc.name, n)
		}
	}
}

// A delivery's status and code, when it was delivered (no error).
func TestStatusCodeOfNoErrorAllocatesNothing(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() { statusCode(nil) }); n != 0 {
		t.Errorf("statusCode(nil) allocates %.0f times, want 0", n)
	}
}

// Routing an event one route takes makes nothing (its sinks are the
// table's, capped), and what Eval returns cannot change the table.
func TestEvalOfOneRouteMakesNothing(t *testing.T) {
	r := newRoutes(t, []config.Route{
		{Types: []string{envelope.TypeTrack}, Sinks: []string{"chabok", "gateway"}},
		{Types: []string{envelope.TypeIdentify}, Sinks: []string{"gateway", "chabok", "gateway"}},
	})
	ev := raw(t, envelope.TypeTrack, "shop/web", track("order_paid", map[string]any{"amount": 5}))
	if n := testing.AllocsPerRun(100, func() { r.Eval(ev) }); n != 0 {
		t.Errorf("Eval allocates %.0f times for an event one route takes, want 0", n)
	}
	got, _ := r.Eval(ev)
	_ = append(got, "more")
	if again, _ := r.Eval(ev); !slices.Equal(again, []string{"chabok", "gateway"}) {
		t.Errorf("after appending to Eval's result, Eval = %v", again)
	}
	id := raw(t, envelope.TypeIdentify, "shop/web", map[string]any{"user": map[string]any{"id": "u"}})
	if got, _ := r.Eval(id); !slices.Equal(got, []string{"gateway", "chabok"}) {
		t.Errorf("a route naming a sink twice: Eval = %v, want each once", got)
	}
}

// A request the vendor accepted goes through the gate and out of it
// making only the release (the breaker's report and the gate's own), and
// the release tells a waiter (a new change channel).
func TestGateRoundOfASuccessMakesOnlyTheRelease(t *testing.T) {
	g := newGate("s", retry.BreakerSettings{FailureThreshold: 5, OpenTimeout: time.Second}, 4, zap.NewNop(), nil)
	round := func() {
		done, _, err := g.acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		done(nil)
	}
	round()
	if n := testing.AllocsPerRun(100, round); n > 3 {
		t.Errorf("a gate round of a success allocates %.0f times, want at most 3", n)
	}
}

// A delivery's first attempt is logged in the delivery's own room; the
// next moves the log out, leaving a copy taken before it as it was.
func TestLoggingTheFirstAttemptAllocatesNothing(t *testing.T) {
	ds := make([]delivery, 101)
	i := 0
	at := time.Now()
	if n := testing.AllocsPerRun(100, func() { ds[i].logAttempt(at, nil); i++ }); n != 0 {
		t.Errorf("logging a delivery's first attempt allocates %.0f times, want 0", n)
	}
	d := &ds[0]
	before := d.log
	d.logAttempt(at, &sinks.Error{Reason: outcome.RetriesExhausted, Transient: true, Status: 503, Message: "down"})
	if len(before.Attempts) != 1 || before.Attempts[0].Status != 0 || before.Total != 1 {
		t.Errorf("the log taken after one attempt changed with the next: %+v", before)
	}
	if len(d.log.Attempts) != 2 || d.log.Total != 2 || d.log.Attempts[0].Status != 0 || d.log.Attempts[1].Status != 503 {
		t.Errorf("the log after two attempts is %+v", d.log)
	}
}
