package dispatch

import (
	"context"
	"errors"
	"maps"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// brokerTimeout bounds every single write to JetStream: a publish whose
// answer never comes (a leader change) ends in a retry, never a wedge.
const brokerTimeout = 5 * time.Second

// settle applies a verdict. Nothing is acked before what replaces it (a
// retry copy, a dead letter) is stored.
func (w *sinkWorker) settle(ctx context.Context, d *delivery, ev *envelope.Event, v Verdict, derr error) {
	switch v.Action {
	case Ack:
		// Fire-and-forget ack: no round trip on the hot path. A lost ack
		// means one redelivery (at-least-once), never a lost event.
		if err := d.msg.Ack(); err != nil {
			w.log.Warn("ack failed; the event may be delivered again", zap.String("sink", w.name),
				zap.String("event_id", clip(ev.ID)), zap.Error(err))
			return
		}
		w.obs.Delivered(w.name, time.Since(d.queued))
		w.recordDelivered(d, ev)
	case Retry:
		w.retry(ctx, d, ev, v, derr)
	case DeadLetter:
		rec := w.record(d, ev, w.name, v.Reason, derr)
		w.deadLetter(ctx, d, rec)
	case HandBack:
		w.handBack(d, v.Delay)
	}
}

// retry stores the event's next attempt as a message scheduled for its
// time in the retries stream, then acks the one in hand: a waiting retry
// occupies no delivery slot. If the copy cannot be stored, the message is
// kept in hand and retried in place (retryInPlace), so the attempt stays
// counted and the policy still ends it.
func (w *sinkWorker) retry(ctx context.Context, d *delivery, ev *envelope.Event, v Verdict, derr error) {
	at := time.Now().Add(v.Delay)
	if err := w.storeRetry(ctx, d, v, derr, at, 3); err != nil {
		w.held.Go(func() { w.retryInPlace(ctx, d, ev, v, derr, at, err) })
		return
	}
	w.retried(d, ev, v, derr)
}

// storeRetry writes the retry copy of d, due at at, trying up to tries
// times within brokerTimeout each.
func (w *sinkWorker) storeRetry(ctx context.Context, d *delivery, v Verdict, derr error, at time.Time, tries int) error {
	msg := d.retryMsg(w.topo.RetryWaitSubject(w.name, d.retryKey()), v, derr)
	topology.Schedule(msg.Header, at, w.topo.RetryDueSubject(w.name))
	var err error
	for try := range tries {
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), brokerTimeout)
		_, err = w.js.PublishMsg(pctx, msg)
		cancel()
		if err == nil || try == tries-1 {
			break
		}
		if sleep(ctx, time.Duration(try+1)*200*time.Millisecond, nil) != nil {
			break
		}
	}
	return err
}

// retried acks a message whose retry copy is stored, and says so.
func (w *sinkWorker) retried(d *delivery, ev *envelope.Event, v Verdict, derr error) {
	_ = d.msg.Ack()
	status, code := statusCode(derr)
	w.obs.Retried(w.name, status)
	w.recordRetrying(d, ev, derr, time.Now().Add(v.Delay))
	w.log.Info("delivery failed; retry scheduled", zap.String("event_id", clip(ev.ID)), zap.String("sink", w.name),
		zap.Int("attempt", d.history.Attempts), zap.Int("status", status), zap.String("code", clip(code)),
		zap.Duration("delay", v.Delay), zap.Error(derr))
}

// retryInPlace takes over a message whose retry copy cannot be stored
// (the retries stream is down, full or refuses it). The event's count
// travels in that copy, so handing the message back (as v2 did) lost it:
// a redelivery starts from the headers' count, and an event failing for
// good was tried for as long as the stream was down and never
// dead-lettered. Instead, as hold does for a dead letter, the message is
// kept ours with in-progress acks and its history stays in memory: after
// the verdict's delay the vendor is tried again in place, and that
// attempt's verdict is settled as any other (ack, dead letter per the
// policy, or a retry, whose copy is tried again: once the stream is back
// the message leaves our hands for it).
//
// Chosen over waiting on the worker (which would stall the sink's healthy
// events behind every failing one) and over a local retry queue (which a
// crash would lose; a kept message is redelivered after ack_wait). What
// it costs: messages retried in place are unacked, so they count against
// the sink's max_ack_pending, which bounds them (and the goroutines); a
// vendor request still goes through the gate (concurrency, breaker,
// pace). When ctx ends (the worker's context: shutdown, after its grace)
// the copy is tried once more, else the message is handed back with what
// is left of its delay: its count is then lost, as in v2, and nothing else.
func (w *sinkWorker) retryInPlace(ctx context.Context, d *delivery, ev *envelope.Event, v Verdict, derr error, at time.Time, first error) {
	defer w.guard(ctx, d.msg) // a panicking sink dead-letters, as on a worker
	defer w.keepUnsettled(d, &w.inPlace, ev.ID, first,
		"retries cannot be stored; keeping their events and retrying them in place (chapar_unsettled counts them)",
		"no events retried in place any more")()
	for {
		// The count so far is this delivery's from now on (the copy
		// that would have carried it was not stored).
		d.history.Counted = v.Counted
		if sleep(ctx, time.Until(at), nil) != nil {
			w.shutInPlace(ctx, d, v, derr, at)
			return
		}
		next, nerr, err := w.attempt(ctx, d, ev, false)
		var shut errShut
		switch {
		case errors.As(err, &shut):
			// The gate is shut (breaker, Retry-After): no request was
			// made; wait it out in hand, the last verdict unchanged.
			at = time.Now().Add(shut.wait)
			continue
		case err != nil:
			w.shutInPlace(ctx, d, v, derr, at)
			return
		}
		v, derr = next, nerr
		if v.Action != Retry {
			w.settle(ctx, d, ev, v, derr)
			return
		}
		at = time.Now().Add(v.Delay)
		if err := w.storeRetry(ctx, d, v, derr, at, 1); err == nil {
			w.retried(d, ev, v, derr)
			return
		}
		status, code := statusCode(derr)
		w.obs.Retried(w.name, status)
		w.recordRetrying(d, ev, derr, at)
		w.log.Info("delivery failed; retrying in place, retries cannot be stored", zap.String("event_id", clip(ev.ID)),
			zap.String("sink", w.name), zap.Int("attempt", d.history.Attempts), zap.Int("status", status),
			zap.String("code", clip(code)), zap.Duration("delay", v.Delay), zap.Error(derr))
	}
}

// shutInPlace ends a retry in place on shutdown: the copy is tried once
// more, and if it still cannot be stored the message is handed back with
// what is left of its delay.
func (w *sinkWorker) shutInPlace(ctx context.Context, d *delivery, v Verdict, derr error, at time.Time) {
	if err := w.storeRetry(ctx, d, v, derr, at, 1); err == nil {
		_ = d.msg.Ack()
		return
	}
	w.handBack(d, time.Until(at))
}

// deadLetter records rec and only then acks the message. If the record
// cannot be stored now, the message is held by a goroutine of its own that
// keeps it ours and retries the write (see hold); the worker moves on, so a
// dead-letter outage neither stalls the sink nor calls the vendor again.
func (w *sinkWorker) deadLetter(ctx context.Context, d *delivery, rec *dlq.Record) {
	err := w.writeDeadLetter(ctx, rec)
	if err == nil {
		_ = d.msg.Ack()
		return
	}
	w.held.Go(func() { w.hold(ctx, d, rec, err) })
}

// writeDeadLetter stores rec once, within brokerTimeout. duplicate writes
// (another sink or replica stored it already) are success, counted once.
func (w *sinkWorker) writeDeadLetter(ctx context.Context, rec *dlq.Record) error {
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), brokerTimeout)
	dup, err := w.dlq.Write(wctx, rec)
	cancel()
	if err != nil {
		return err
	}
	if !dup {
		w.obs.DeadLettered(rec.Sink, string(rec.Reason), rec.Status, rec.Code)
		w.recordDeadLettered(rec)
		detailsOf(w.obs).DeadLetterStored(rec)
		w.log.Warn("dead-lettered", zap.String("event_id", clip(rec.EventID)), zap.String("sink", rec.Sink),
			zap.Stringer("reason", rec.Reason), zap.Int("status", rec.Status), zap.String("code", rec.Code),
			zap.Int("attempts", rec.Attempts), zap.String("error", rec.Error))
	}
	return nil
}

// keepUnsettled is what a goroutine holding a decided message in hand
// (hold, retryInPlace) does around its loop: in-progress acks keep the
// message this process's, chapar_unsettled counts it, and held, the
// count of messages held that way, says so in the log once when it
// becomes 1 (starting, with the first event and error) and once when it
// is back to 0 (ending), not once per event: an outage must not flood
// the log. Call the returned function when the message is settled.
func (w *sinkWorker) keepUnsettled(d *delivery, held *atomic.Int64, eventID string, first error, starting, ending string) (release func()) {
	stop := keepAlive(w.ackWait/3, d.msg)
	w.obs.Unsettled(w.name, 1)
	if held.Add(1) == 1 {
		w.log.Error(starting, zap.String("sink", w.name), zap.String("first_event_id", clip(eventID)), zap.Error(first))
	}
	return func() {
		w.obs.Unsettled(w.name, -1)
		if held.Add(-1) == 0 {
			w.log.Info(ending, zap.String("sink", w.name))
		}
		stop()
	}
}

// hold keeps a message whose verdict is known but whose dead letter cannot
// be written: in-progress acks keep it from being redelivered (the vendor
// already answered for it), and the write is retried with backoff for as
// long as it takes. Meanwhile it counts as unsettled (a gauge, and a log
// line on the first failure). Held messages are bounded by the sink's
// max_ack_pending. On shutdown the message is handed back.
func (w *sinkWorker) hold(ctx context.Context, d *delivery, rec *dlq.Record, first error) {
	defer w.keepUnsettled(d, &w.holding, rec.EventID, first,
		"dead letters cannot be written; holding their events and trying again (chapar_unsettled counts them)",
		"no events held any more")()
	backoff := 200 * time.Millisecond
	for {
		if sleep(ctx, backoff, nil) != nil {
			w.handBack(d, 0)
			return
		}
		if err := w.writeDeadLetter(ctx, rec); err == nil {
			_ = d.msg.Ack()
			return
		}
		backoff = min(backoff*2, 5*time.Second)
	}
}

// handBack returns the message to JetStream untouched: not an attempt.
// A little jitter spreads what many workers hand back at once.
func (w *sinkWorker) handBack(d *delivery, delay time.Duration) {
	if delay <= 0 {
		_ = d.msg.Nak()
		return
	}
	_ = d.msg.NakWithDelay(delay + time.Duration(rand.Int64N(int64(delay)/10+1)))
}

// record builds the one dead-letter record of this delivery. ev is nil
// when the envelope could not be parsed.
func (w *sinkWorker) record(d *delivery, ev *envelope.Event, sink string, reason outcome.Reason, err error) *dlq.Record {
	now := time.Now()
	rec := &dlq.Record{
		Sink: sink, Reason: reason, Attempts: d.history.Attempts,
		FirstAttempt: d.history.First, LastAttempt: now, Received: d.received,
		Header: d.msg.Headers(), Data: d.msg.Data(), Subject: d.msg.Subject(),
		Origin: d.origin, Replays: d.replays, Log: d.log.Clone(),
	}
	if link := traceLink(d.lastSpan()); link != "" {
		// A replay's first attempt links to the attempt that failed.
		rec.Header = maps.Clone(rec.Header)
		rec.Header[topology.HeaderTraceLink] = []string{link}
	}
	if rec.FirstAttempt.IsZero() {
		rec.FirstAttempt = d.received
	}
	if err != nil {
		rec.Error = clipN(err.Error(), 1024)
		rec.Status, rec.Code = statusCode(err)
		rec.Code = clip(rec.Code)
	}
	if ev != nil {
		rec.EventID, rec.EventType = ev.ID, ev.Type
		rec.Subject = w.topo.SubjectOf(&ev.Envelope)
	} else {
		rec.EventID = envelope.ProbeID(d.msg.Headers(), d.msg.Data())
	}
	return rec
}
