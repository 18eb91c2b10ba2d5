package dispatch

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/sinks"
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
