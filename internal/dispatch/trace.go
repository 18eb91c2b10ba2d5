package dispatch

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/internal/tracing"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// startAttempt opens the span of one delivery attempt. It continues the
// producer's trace from the envelope's traceparent/tracestate extension
// (CloudEvents distributed tracing), and links the attempt before it (a
// retry or a replay carries that attempt's span in HeaderTraceLink).
func (w *sinkWorker) startAttempt(ctx context.Context, d *delivery, ev *envelope.Event) (context.Context, trace.Span) {
	prop := tracing.Propagator()
	parent := prop.Extract(ctx, propagation.MapCarrier{"traceparent": ev.Traceparent(), "tracestate": ev.Tracestate()})
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(
			attribute.String("chapar.sink", w.name),
			attribute.String("chapar.event.id", clip(ev.ID)),
			attribute.String("chapar.event.type", clip(ev.Type)),
			attribute.Int("chapar.attempt", d.history.Attempts+1),
			attribute.Int("chapar.replays", d.replays),
		),
	}
	if prev := d.msg.Headers().Get(topology.HeaderTraceLink); prev != "" {
		linked := trace.SpanContextFromContext(prop.Extract(ctx, propagation.MapCarrier{"traceparent": prev}))
		if linked.IsValid() {
			opts = append(opts, trace.WithLinks(trace.Link{SpanContext: linked}))
		}
	}
	return w.tracer.Start(parent, "chapar.deliver "+w.name, opts...)
}

// endAttempt records how the attempt ended and what was decided.
func endAttempt(span trace.Span, v Verdict, derr error) {
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
