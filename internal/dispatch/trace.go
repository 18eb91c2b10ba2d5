package dispatch

import (
	"context"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/internal/tracing"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// startAttempt opens the span of one delivery attempt. It continues the
// producer's trace from the envelope's traceparent/tracestate extension
// (CloudEvents distributed tracing), and links the attempt before it (a
// retry or a replay carries that attempt's span in HeaderTraceLink).
func (w *sinkWorker) startAttempt(ctx context.Context, d *delivery, ev *envelope.Event) (context.Context, trace.Span) {
	return w.startSpan(ctx, d, ev, d.history.Attempts+1)
}

// startBatchAttempts opens one span per event of a batch that the sink
// delivered in one request at start: each event's own attempt, in its
// producer's trace, as if it had gone alone. One batch span linking the
// producers' traces instead would be a root span in a trace of its own,
// invisible from any producer's trace, and could not carry each event's
// own status, vendor code and outcome (a batch's events are judged one by
// one). The batch shows as messaging.batch.message_count (OpenTelemetry's
// messaging conventions). Called after the request, with the attempts
// already counted, so that a batch the sink could not send (it panicked:
// not an attempt) leaves no span.
func (b *batcher) startBatchAttempts(ctx context.Context, items []batchItem, start time.Time) []trace.Span {
	spans := make([]trace.Span, len(items))
	for i, it := range items {
		_, spans[i] = b.w.startSpan(ctx, it.d, it.ev, it.d.history.Attempts,
			trace.WithTimestamp(start), trace.WithAttributes(attribute.Int("messaging.batch.message_count", len(items))))
		it.d.setSpan(spans[i].SpanContext())
	}
	return spans
}

// startSpan opens the span of the given attempt of d.
func (w *sinkWorker) startSpan(ctx context.Context, d *delivery, ev *envelope.Event, attempt int, extra ...trace.SpanStartOption) (context.Context, trace.Span) {
	prop := tracing.Propagator()
	parent := ctx
	if tp := ev.Traceparent(); tp != "" {
		// Without a traceparent the W3C propagator finds no span and
		// returns ctx as it is: most events carry none, and the carrier
		// was a map built per attempt for nothing.
		parent = prop.Extract(ctx, propagation.MapCarrier{"traceparent": tp, "tracestate": ev.Tracestate()})
	}
	if _, off := w.tracer.(noop.Tracer); off {
		// Tracing is off: what the no-op tracer would return (the
		// producer's span, not recording), without building attributes
		// and links it drops: they were a fifth of the dispatch
		// package's CPU in batches to Chabok (BenchmarkBatch, profiled).
		return parent, trace.SpanFromContext(parent)
	}
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("chapar.sink", w.name),
			attribute.String("chapar.event.id", clip(ev.ID)),
			attribute.String("chapar.event.type", clip(ev.Type)),
			attribute.Int("chapar.attempt", attempt),
			attribute.Int("chapar.replays", d.replays),
		),
	}
	if d.span != nil {
		// An attempt before this one in this process: a batch's half sent
		// again (bisection), or an ordered head retried in place.
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: *d.span}))
	} else if prev := d.msg.Headers().Get(topology.HeaderTraceLink); prev != "" {
		linked := trace.SpanContextFromContext(prop.Extract(ctx, propagation.MapCarrier{"traceparent": prev}))
		if linked.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: linked}))
		}
	}
	return w.tracer.Start(parent, "chapar.deliver "+w.name, append(opts, extra...)...)
}

// endAttempt records how the attempt ended and what was decided.
func endAttempt(span trace.Span, v Verdict, derr error) {
	if !span.IsRecording() {
		// Tracing off (or the span not sampled): the span drops what it
		// is given, and building it was allocations per attempt.
		span.End()
		return
	}
	status, code := statusCode(derr)
	span.SetAttributes(attribute.String("chapar.outcome", v.Action.String()))
	if status != 0 {
		span.SetAttributes(attribute.Int("http.response.status_code", status))
	}
	if code != "" {
		span.SetAttributes(attribute.String("chapar.vendor.code", clip(code)))
	}
	if v.Reason != "" {
		span.SetAttributes(attribute.String("chapar.reason", string(v.Reason)))
	}
	if derr != nil {
		span.SetStatus(codes.Error, clip(derr.Error()))
	}
	span.End()
}

// traceLink is the traceparent of a span, for HeaderTraceLink.
func traceLink(sc trace.SpanContext) string {
	if !sc.IsValid() {
		return ""
	}
	flags := "00"
	if sc.IsSampled() {
		flags = "01"
	}
	return "00-" + sc.TraceID().String() + "-" + sc.SpanID().String() + "-" + flags
}
