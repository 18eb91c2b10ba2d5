package dispatch

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// sinkWorker delivers one sink's events. handle is the whole path of one
// message, top to bottom:
//
//	guard     a panic dead-letters the message instead of killing the process
//	parse     an invalid envelope is dead-lettered with its reason
//	route     events not routed to this sink are acked (skipped); a
//	          destination no dispatcher runs is dead-lettered for it
//	gate      breaker, Retry-After pause and ramp; a long wait hands back
//	deliver   one vendor request, kept alive past ack_wait
//	decide    the pure verdict (decide.go)
//	settle    ack, scheduled retry, dead letter or hand-back (settle.go)
type sinkWorker struct {
	*engine
	name   string
	sink   sinks.Sink
	policy retry.Policy
	gate   *gate
	// lead says the sink is a lead (ChooseLeads: marked on the server,
	// or the first configured of a deployment without one), which counts
	// what is counted per event, not per sink: received and unrouted.
	lead bool
	// batch, when the sink batches, takes over from deliver (batch.go).
	batch *batcher
	// fence acks skips only while this replica's config owns the sink.
	fence *fence
	// held are messages kept while their dead letter or their retry
	// cannot be written; holding counts the former.
	held    sync.WaitGroup
	holding atomic.Int64
	// inPlace counts messages retried in place while their retry copy
	// cannot be stored (settle.go, retryInPlace); they are held too.
	inPlace atomic.Int64
	// alive keeps a message alive while it is delivered (keepalive.go).
	alive alivePool
}

// handle takes one message to its settlement. It never panics and never
// returns with the message unsettled.
func (w *sinkWorker) handle(ctx context.Context, j job) {
	if w.batch != nil {
		batched := false
		var d *delivery
		defer func() { // after guard
			if !batched {
				w.batch.pass(j.ticket, d)
			}
		}()
		defer w.guard(ctx, j.msg)
		var ev *envelope.Event
		var ok bool
		d, ev, ok = w.admit(ctx, j)
		if ok {
			batched = w.batch.add(ctx, j.ticket, d, ev)
		}
		return
	}
	defer w.guard(ctx, j.msg)
	d, ev, ok := w.admit(ctx, j)
	if !ok {
		return
	}
	w.deliver(ctx, d, ev)
}

// admit is the path's first half: parse and route. It reports ok with the
// delivery and its event when the message is this sink's to deliver, and
// settles it otherwise (skipped, dead-lettered or handed back).
func (w *sinkWorker) admit(ctx context.Context, j job) (d *delivery, ev *envelope.Event, ok bool) {
	d, ev, targets, ok := w.parseRoute(ctx, j)
	if !ok || d.retry {
		return d, ev, ok
	}
	return d, ev, w.resolve(ctx, d, ev, targets)
}

// parseRoute parses a message and matches its routes (nil targets for a
// retry, which is this sink's alone). It settles an invalid message and
// reports ok for the rest.
func (w *sinkWorker) parseRoute(ctx context.Context, j job) (d *delivery, ev *envelope.Event, targets []string, ok bool) {
	meta, err := j.msg.Metadata()
	if err != nil {
		w.log.Error("message without JetStream metadata; terminating it", zap.String("sink", w.name), zap.Error(err))
		_ = j.msg.Term()
		return nil, nil, nil, false
	}
	d = newDelivery(j.msg, meta, j.retry)
	// Counted once per event: by one sink, on its first delivery.
	count := w.lead && !d.retry && meta.NumDelivered == 1
	if count {
		w.obs.Received()
	}
	ev, err = envelope.ParseMessage(j.msg.Headers(), j.msg.Data(), w.maxBytes)
	if err == nil {
		err = w.schemas.Check(ev.Type, ev.Data) // the config's schema of its type, if any
	}
	if err != nil {
		w.deadLetter(ctx, d, w.record(d, nil, dlq.NoSink, outcome.InvalidEnvelope, err))
		return d, nil, nil, false // settled; d says what was pending behind it (pass)
	}
	if !d.retry {
		var failed []FilterFailure
		targets, failed = w.routes.Eval(ev)
		if len(failed) > 0 && meta.NumDelivered == 1 {
			w.filterFailed(ev, failed)
		}
		if count && len(targets) == 0 {
			w.obs.Unrouted(ev.Type, ev.Name())
			w.log.Debug("event matched no route", zap.String("event_id", clip(ev.ID)), zap.String("type", clip(ev.Type)))
		}
	}
	return d, ev, targets, true
}

// filterFailed counts and logs the routes whose filter failed on an
// event (they did not match it). Every sink's worker evaluates every
// route, so each failure is told by one: the worker of the route's first
// sink, which consumes what the route takes. Logged at a bounded rate
// (engine.filterLog): a producer that leaves out a field fails on every
// event, and the count is in chapar_route_filter_failures_total.
func (w *sinkWorker) filterFailed(ev *envelope.Event, failed []FilterFailure) {
	for _, f := range failed {
		if w.routes.teller(f.Route) != w.name {
			continue
		}
		key := fmt.Sprintf("routes[%d]", f.Route)
		w.obs.FilterFailed(key)
		if w.filterLog.Allow() {
			w.log.Warn("a route's filter failed on an event; the route does not match it",
				zap.String("route", key), zap.String("event_id", clip(ev.ID)), zap.String("type", clip(ev.Type)),
				zap.Error(f.Err), zap.String("more", "at most one such line every "+filterLogEvery.String()+
					"; chapar_route_filter_failures_total counts them all"))
		}
	}
}

// resolve is the route step's second half: it dead-letters the event for
// destinations no dispatcher runs, and acks it if it is not this sink's.
// It reports whether this sink is to deliver it; a message it cannot
// check is handed back shortly.
func (w *sinkWorker) resolve(ctx context.Context, d *delivery, ev *envelope.Event, targets []string) bool {
	if err := w.checkDestinations(ctx, d, ev, targets); err != nil {
		w.log.Warn("destinations not checked; handing the event back", zap.String("event_id", clip(ev.ID)), zap.Error(err))
		w.handBack(d, time.Second)
		return false
	}
	if !slices.Contains(targets, w.name) {
		w.fence.skip(d.msg) // not for this sink: acked once the fence holds
		return false
	}
	return true
}

// deliver makes one vendor request through the gate, decides and settles.
func (w *sinkWorker) deliver(ctx context.Context, d *delivery, ev *envelope.Event) {
	v, derr, err := w.attempt(ctx, d, ev, true)
	if err != nil {
		var shut errShut
		switch {
		case errors.Is(err, errExpired), errors.As(err, &shut) && w.expired(d, time.Now()):
			w.expire(ctx, d, ev)
		case errors.As(err, &shut):
			w.handBack(d, shut.wait)
		default:
			w.handBack(d, 0) // shutting down
		}
		return
	}
	w.settle(ctx, d, ev, v, derr)
}

// errSinkPanicked is the error of an attempt's span when the sink
// panicked (guard dead-letters the message).
var errSinkPanicked = errors.New("the sink panicked during the attempt")

// errExpired says an event's max_elapsed passed before its next attempt:
// no request is made, it is dead-lettered.
var errExpired = errors.New("max_elapsed passed before the next attempt")

// expired says whether the event's max_elapsed has passed since its first
// attempt. Decide schedules a retry only if it falls due within
// max_elapsed, but a due retry that finds the gate shut (the breaker open,
// a pause) waits for it; without this it would wait until a probe happened
// to pick it, one event per open period, far past max_elapsed. So no
// attempt is made after max_elapsed, and an event the gate refuses after
// it is dead-lettered.
//
// An operator's pause is not the vendor's doing: while the sink is paused
// nothing expires (a paused sink dead-letters nothing), and the time it
// was paused is not counted against max_elapsed.
// throttlePause is how long a failed request pauses the whole sink: the
// vendor's Retry-After (clamped to max_retry_after), or for a 429 without
// one, the retry policy's first wait (initial_interval), unless the sink
// has a rate_limit, whose pace a 429 halves instead. The vendor says it is
// overloaded, not that this event is bad: without a pause every worker
// goes on sending at full concurrency (a 429 is no breaker failure and
// charges no attempt), for as long as max_elapsed
// (TestThrottledVendorIsNotHammered).
func (w *sinkWorker) throttlePause(err error) time.Duration {
	var se *sinks.Error
	switch {
	case !errors.As(err, &se) || !se.Transient:
		return 0
	case se.RetryAfter > 0:
		return min(se.RetryAfter, w.policy.MaxRetryAfter)
	case se.Status == http.StatusTooManyRequests && w.gate.pace == nil:
		return min(w.policy.InitialInterval, w.policy.MaxRetryAfter)
	}
	return 0
}

func (w *sinkWorker) expired(d *delivery, now time.Time) bool {
	if w.policy.MaxElapsed <= 0 || d.history.First.IsZero() || w.gate.heldByOperator() {
		return false
	}
	elapsed := now.Sub(d.history.First) - w.gate.heldWithin(d.history.First, now)
	return elapsed > w.policy.MaxElapsed
}

// unpaused is h as Decide sees it: its first attempt moved later by the
// time an operator had the sink paused since, so a pause does not use up
// max_elapsed (expired's rule, for the next retry's schedule).
func (w *sinkWorker) unpaused(h History, now time.Time) History {
	if !h.First.IsZero() {
		h.First = h.First.Add(w.gate.heldWithin(h.First, now))
	}
	return h
}

// expire dead-letters an event the gate refused after its max_elapsed.
func (w *sinkWorker) expire(ctx context.Context, d *delivery, ev *envelope.Event) {
	w.deadLetter(ctx, d, w.expiredRecord(d, ev))
}

// expiredRecord is the dead letter of an event the gate refused after its
// max_elapsed: retries_exhausted, with the last attempt's status, code and
// error. No request is made: the vendor is down or has asked to wait.
func (w *sinkWorker) expiredRecord(d *delivery, ev *envelope.Event) *dlq.Record {
	last := "none recorded"
	var status int
	var code string
	if n := len(d.log.Attempts); n > 0 {
		a := d.log.Attempts[n-1]
		last, status, code = a.Error, a.Status, a.Code
	}
	rec := w.record(d, ev, w.name, outcome.RetriesExhausted,
		fmt.Errorf("max_elapsed %s passed before the next attempt (it waited for the sink: breaker open, a pause or a backlog); last error: %s", w.policy.MaxElapsed, last))
	rec.Status, rec.Code = status, code
	w.log.Warn("max_elapsed passed before the next attempt; dead-lettering", zap.String("sink", w.name),
		zap.String("event_id", clip(ev.ID)), zap.Int("attempts", d.history.Attempts))
	return rec
}

// attempt makes one vendor request through the gate and decides. If the
// gate stays shut (errShut) or ctx ends first, no request is made and err
// says so; the caller settles. It sends in-progress acks during the
// request (keep); an ordered sink sends its own (order.go).
func (w *sinkWorker) attempt(ctx context.Context, d *delivery, ev *envelope.Event, keep bool) (v Verdict, derr, err error) {
	if w.expired(d, time.Now()) {
		return v, nil, errExpired
	}
	done, vendorDown, err := w.gate.acquire(ctx)
	if err != nil {
		return v, nil, err
	}
	ctx, span := w.startAttempt(ctx, d, ev)
	d.setSpan(span.SpanContext())
	now := time.Now()
	d.history.Attempts++
	if d.history.First.IsZero() {
		d.history.First = now
	}
	// A slow vendor may take longer than ack_wait: keep the message ours,
	// so JetStream does not hand it to another replica, while a crashed
	// process still loses it after one ack_wait.
	var alive *keepOne
	if keep {
		alive = w.alive.keep(w.ackWait/3, d.msg)
	}
	// A sink that panics (a bug on one event; guard dead-letters it) must
	// give back what the attempt holds: its gate slot, or the sink wedges
	// after as many panics as it has workers, and its keep-alive, or it
	// ticks for the life of the process.
	panicked := true
	defer func() {
		if panicked {
			if alive != nil {
				w.alive.release(alive)
			}
			done(errNotARequest)
			// And its span: unended, it is never exported, and the
			// attempt that panicked is missing from the producer's trace.
			endAttempt(span, Verdict{Action: DeadLetter, Reason: outcome.HandlerPanic}, errSinkPanicked)
		}
	}()
	d.out = sinks.Delivery{Event: ev, ReceivedAt: d.received}
	derr = w.sink.Deliver(ctx, &d.out)
	panicked = false
	if alive != nil {
		w.alive.release(alive)
	}
	// Only our own context ending makes this not an attempt; a vendor
	// timeout is one (Decide).
	cut := derr != nil && ctx.Err() != nil
	d.logAttempt(now, derr)
	w.obs.VendorRequest(w.name, time.Since(now), derr)
	// The pause before the release: the release frees the gate for the
	// next request, which must find the sink paused.
	if derr != nil { // se escapes (errors.As): not allocated for a success
		if p := w.throttlePause(derr); p > 0 {
			w.gate.pause(p)
		}
	}
	if cut {
		done(errNotARequest)
	} else {
		done(derr)
	}
	v = Decide(w.policy, w.unpaused(d.history, time.Now()), Attempt{Err: derr, VendorDown: vendorDown, CutShort: cut}, time.Now())
	endAttempt(span, v, derr)
	return v, derr, nil
}

// checkDestinations dead-letters the event for each destination that is
// not a sink of the deployment at the event's position: no consumer of
// that name on the event's partition, or one that starts after the event
// (the sink was added after it was published, or from a later time).
// Every sink's consumer checks and each reaches the same answer, decided
// by stream position, not by when it checks, so the event is either the
// destination's to deliver or dead-lettered (once: dlq.Writer), never
// both and never neither. An error says the deployment could not be
// asked or the record not written; the caller hands back (admit) or
// waits in place (an ordered lane).
func (w *sinkWorker) checkDestinations(ctx context.Context, d *delivery, ev *envelope.Event, targets []string) error {
	return w.checkTargets(ctx, d, ev, targets, nil)
}

// checkTargets is checkDestinations; before, if set, are the filters this
// sink's consumer read when it passed over the event (a lead's sweep,
// sweep.go): it is judged for this sink by them, as for any other sink,
// not as one this sink reads.
func (w *sinkWorker) checkTargets(ctx context.Context, d *delivery, ev *envelope.Event, targets []string, before *[]string) error {
	partition, seq := topology.SplitOrigin(d.origin)
	for _, t := range targets {
		covered, filters, err := w.starts.covers(ctx, w.js, w.topo, t, partition, seq)
		if err != nil {
			return fmt.Errorf("cannot tell whether sink %q, named in destinations, covers the event: %w", clip(t), err)
		}
		var why error
		if covered {
			// This sink reads the event, so it delivers it; another may
			// read only its routes' types: an event with destinations
			// published on its type's subject, not the direct one,
			// would never reach it.
			self := t == w.name
			if self && before != nil {
				filters, self = *before, false
			}
			if self || topology.Reads(filters, d.msg.Subject()) {
				continue
			}
			why = fmt.Errorf("destinations names sink %q, whose consumer reads only its routes' types and %s, but the event was published on %s: "+
				"publish events with destinations under the direct subjects (docs/envelope.md, \"Destinations\"); dlq replay delivers this one",
				t, w.topo.DirectSubjects(partition), d.msg.Subject())
		} else if len(ev.DestinationList()) > 0 {
			why = fmt.Errorf("destinations names sink %q, which did not exist in the deployment when the event was published; configure it, then dlq replay", t)
		} else {
			// A route sends it to a sink added after the event was
			// stored: the sink starts with new events, and this one is
			// dead-lettered rather than silently not its.
			why = fmt.Errorf("the routes send it to sink %q, whose consumer starts after the event was published (a sink starts with new events); dlq replay delivers it to the sink if it should have it", t)
		}
		rec := w.record(d, ev, t, outcome.UnknownDestination, why)
		rec.Attempts = 0
		if err := w.writeDeadLetter(ctx, rec); err != nil {
			return fmt.Errorf("dead letter for unknown destination %q not written: %w", clip(t), err)
		}
	}
	return nil
}

// guard turns a panic into a dead letter: one hostile message must not
// crash-loop every replica.
func (w *sinkWorker) guard(ctx context.Context, msg jetstream.Msg) {
	r := recover()
	if r == nil {
		return
	}
	w.obs.Panicked("handle")
	w.log.Error("panic while handling a message; dead-lettering it", zap.String("sink", w.name),
		zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
	defer func() {
		if recover() != nil {
			_ = msg.NakWithDelay(time.Minute) // the dead letter panicked too: keep it, slowly
		}
	}()
	meta, err := msg.Metadata()
	if err != nil {
		_ = msg.Term()
		return
	}
	d := newDelivery(msg, meta, meta.Stream == w.topo.RetriesStream())
	w.deadLetter(ctx, d, w.record(d, nil, w.name, outcome.HandlerPanic, fmt.Errorf("panic: %v", r)))
}

// clip bounds a producer-controlled string for a log line or a record.
func clip(s string) string { return clipN(s, 128) }

func clipN(s string, n int) string {
	c := envelope.Clip(s, n) // valid UTF-8, cut on a rune boundary
	if len(s) > n {
		c += "…"
	}
	return c
}
