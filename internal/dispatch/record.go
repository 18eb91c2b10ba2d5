package dispatch

import (
	"time"

	"github.com/chapar-dev/chapar/internal/deliveries"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// A delivery's record (internal/deliveries) is written where its state is
// settled: acked (delivered), its retry scheduled (stored, or retried in
// place), its dead letter stored. It is what `dispatcher events show`
// answers from. Recording is a plain publish: it neither waits nor fails a
// delivery (deliveries.Writer); with streams.record_deliveries off,
// recorder is nil and nothing is written.

// recordDelivered records d acked: the vendor accepted it.
func (w *sinkWorker) recordDelivered(d *delivery, ev *envelope.Event) {
	if w.recorder == nil {
		return
	}
	r := w.deliveryRecord(d, ev, deliveries.Delivered, nil)
	r.Latency = time.Since(d.queued)
	w.recorder.Record(r)
}

// recordRetrying records d's failed attempt and when it is tried again.
func (w *sinkWorker) recordRetrying(d *delivery, ev *envelope.Event, derr error, next time.Time) {
	if w.recorder == nil {
		return
	}
	r := w.deliveryRecord(d, ev, deliveries.Retrying, derr)
	r.NextAttempt = next.UTC()
	w.recorder.Record(r)
}

// recordDeadLettered records rec, a dead letter just stored.
func (w *sinkWorker) recordDeadLettered(rec *dlq.Record) {
	if w.recorder == nil {
		return
	}
	r := deliveries.Record{
		EventID: rec.EventID, Type: rec.EventType, Sink: rec.Sink, State: deliveries.DeadLettered,
		At: time.Now().UTC(), Attempts: rec.Attempts, Status: rec.Status, Code: rec.Code, Error: rec.Error,
		Reason: string(rec.Reason), DeadLetter: rec.Seq, Origin: rec.Origin, Replays: rec.Replays,
	}
	w.locate(&r)
	w.recorder.Record(r)
}

func (w *sinkWorker) deliveryRecord(d *delivery, ev *envelope.Event, state deliveries.State, derr error) deliveries.Record {
	r := deliveries.Record{
		EventID: ev.ID, Type: ev.Type, Subject: ev.Subject, Name: ev.Name(), Sink: w.name, State: state,
		At: time.Now().UTC(), Attempts: d.history.Attempts, Origin: d.origin, Replays: d.replays,
	}
	if derr != nil {
		r.Status, r.Code = statusCode(derr)
		r.Error = clipN(derr.Error(), 512)
	}
	w.locate(&r)
	return r
}

// locate fills in where the event is stored, from its origin.
func (w *sinkWorker) locate(r *deliveries.Record) {
	if r.Origin == 0 {
		return
	}
	p, seq := topology.SplitOrigin(r.Origin)
	r.Stream, r.Seq = w.topo.EventsStreamOf(p), seq
}
