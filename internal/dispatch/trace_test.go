package dispatch_test

import (
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) attribute.Value {
	for _, a := range s.Attributes() {
		if a.Key == key {
			return a.Value
		}
	}
	return attribute.Value{}
}

// Each delivery attempt is a span in the producer's trace (continued from
// the envelope's traceparent extension), with the sink, the attempt, the
// vendor's status and the outcome; a retry's span links the attempt before.
func TestAttemptsAreSpansInTheProducersTrace(t *testing.T) {
	e := testenv.New(t)
	rec := tracetest.NewSpanRecorder()
	e.Tracer = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 503, Count: 1})
	e.Start([]config.Sink{e.Sink("gateway", emulator.MetrixGateway, slugs, nil)}, []config.Route{{Sinks: []string{"gateway"}}})
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	env := testenv.Track(t, "order_paid", "u1", envelope.WithExtension("traceparent", "00-"+traceID+"-"+parentID+"-01"))
	e.Publish(env)
	testenv.Eventually(t, 10*time.Second, "delivered on the retry", allDelivered(t, e, []string{env.ID}))
	var spans []sdktrace.ReadOnlySpan
	testenv.Eventually(t, 5*time.Second, "two ended spans", func() bool { spans = rec.Ended(); return len(spans) == 2 })
	first, second := spans[0], spans[1]
	for _, s := range spans {
		if s.SpanContext().TraceID().String() != traceID || s.Parent().SpanID().String() != parentID {
			t.Errorf("span %s in trace %s under %s, want the producer's %s under %s", s.Name(),
				s.SpanContext().TraceID(), s.Parent().SpanID(), traceID, parentID)
		}
		if attr(s, "chapar.sink").AsString() != "gateway" || attr(s, "chapar.event.id").AsString() != env.ID {
			t.Errorf("span %s attributes %v", s.Name(), s.Attributes())
		}
	}
	if attr(first, "chapar.attempt").AsInt64() != 1 || attr(first, "http.response.status_code").AsInt64() != 503 ||
		attr(first, "chapar.outcome").AsString() != "retry" {
		t.Errorf("first attempt %v", first.Attributes())
	}
	if attr(second, "chapar.attempt").AsInt64() != 2 || attr(second, "chapar.outcome").AsString() != "ack" {
		t.Errorf("second attempt %v", second.Attributes())
	}
	if links := second.Links(); len(links) != 1 || links[0].SpanContext.SpanID() != first.SpanContext().SpanID() {
		t.Errorf("the retry's span links %v, want the first attempt %s", links, first.SpanContext().SpanID())
	}
}
