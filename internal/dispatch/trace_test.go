package dispatch_test

import (
	"fmt"
	"slices"
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
	t.Parallel() // waits on the server and the vendor, not on the CPU
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

// A batched sink's request is one span per event, each in its producer's
// trace with that event's own status, vendor code and outcome (one event
// of a batch may be rejected while the others are accepted), and a failed
// batch's retries link the attempt before, as unbatched attempts do.
func TestBatchedAttemptsAreSpansInEachProducersTrace(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	rec := tracetest.NewSpanRecorder()
	e.Tracer = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	chabok := e.Emu.Vendor(emulator.Chabok)
	chabok.SetFault(emulator.Fault{Status: 400, Code: "INVALID_EVENT", Match: `"eventName":"poison"`})
	// Batches of exactly 3: the long wait never cuts one short.
	sink := batched(e.Sink("chabok", emulator.Chabok, nil, nil), 3, time.Minute)
	d := e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"chabok"}}})

	type sent struct{ id, traceID, parentID, name string }
	publish := func(round int, names ...string) []sent {
		var out []sent
		for i, name := range names {
			traceID := fmt.Sprintf("%032x", round*16+i+1)
			parentID := fmt.Sprintf("%016x", round*16+i+1)
			env := testenv.Track(t, name, fmt.Sprintf("u%d", i),
				envelope.WithExtension("traceparent", "00-"+traceID+"-"+parentID+"-01"))
			e.Publish(env)
			out = append(out, sent{id: env.ID, traceID: traceID, parentID: parentID, name: name})
		}
		return out
	}
	spansOf := func(id string) []sdktrace.ReadOnlySpan {
		var out []sdktrace.ReadOnlySpan
		for _, s := range rec.Ended() {
			if attr(s, "chapar.event.id").AsString() == id {
				out = append(out, s)
			}
		}
		return out
	}
	checkSpan := func(ev sent, s sdktrace.ReadOnlySpan, attempt int64, outcome string, status int64, code string, batch int64) {
		t.Helper()
		if s.SpanContext().TraceID().String() != ev.traceID || s.Parent().SpanID().String() != ev.parentID {
			t.Errorf("%s: span in trace %s under %s, want its producer's %s under %s", ev.name,
				s.SpanContext().TraceID(), s.Parent().SpanID(), ev.traceID, ev.parentID)
		}
		if attr(s, "chapar.sink").AsString() != "chabok" || attr(s, "chapar.attempt").AsInt64() != attempt ||
			attr(s, "chapar.outcome").AsString() != outcome || attr(s, "http.response.status_code").AsInt64() != status ||
			attr(s, "chapar.vendor.code").AsString() != code || attr(s, "messaging.batch.message_count").AsInt64() != batch {
			t.Errorf("%s attempt %d: attributes %v; want outcome %s, status %d, code %q, batch of %d",
				ev.name, attempt, s.Attributes(), outcome, status, code, batch)
		}
	}

	// One batch, one event in it rejected.
	first := publish(0, "order_paid", "poison", "signup")
	testenv.Eventually(t, 15*time.Second, "the batch's three spans", func() bool {
		return len(spansOf(first[0].id)) == 1 && len(spansOf(first[1].id)) == 1 && len(spansOf(first[2].id)) == 1
	})
	checkSpan(first[0], spansOf(first[0].id)[0], 1, "ack", 0, "", 3)
	checkSpan(first[1], spansOf(first[1].id)[0], 1, "dead-letter", 400, "INVALID_EVENT", 3)
	checkSpan(first[2], spansOf(first[2].id)[0], 1, "ack", 0, "", 3)
	if d.Tally.DeliveredTo("chabok") != 2 {
		t.Errorf("%d delivered, want the two good events", d.Tally.DeliveredTo("chabok"))
	}

	// A batch the vendor fails as a whole: its halves are sent again at
	// once (bisection), each event's second attempt its own span, in a
	// batch of 1 or 2, linked to its first.
	chabok.SetFault(emulator.Fault{Status: 503, Count: 1})
	second := publish(1, "order_paid", "order_paid", "order_paid")
	testenv.Eventually(t, 15*time.Second, "each event's two attempts", func() bool {
		for _, ev := range second {
			if len(spansOf(ev.id)) != 2 {
				return false
			}
		}
		return true
	})
	// Which event lands in which half depends on the order the workers
	// handed the three to the batch (they parse in parallel): one half
	// holds one, the other two.
	var sizes []int64
	for _, ev := range second {
		sizes = append(sizes, attr(spansOf(ev.id)[1], "messaging.batch.message_count").AsInt64())
	}
	slices.Sort(sizes)
	if !slices.Equal(sizes, []int64{1, 2, 2}) {
		t.Errorf("second attempts in batches of %v; want one of 1 and two of 2 (the halves)", sizes)
	}
	for _, ev := range second {
		spans := spansOf(ev.id)
		checkSpan(ev, spans[0], 1, "retry", 503, "", 3)
		checkSpan(ev, spans[1], 2, "ack", 0, "", attr(spans[1], "messaging.batch.message_count").AsInt64())
		if links := spans[1].Links(); len(links) != 1 || links[0].SpanContext.SpanID() != spans[0].SpanContext().SpanID() {
			t.Errorf("the retry's span links %v, want the first attempt %s", links, spans[0].SpanContext().SpanID())
		}
	}
}
