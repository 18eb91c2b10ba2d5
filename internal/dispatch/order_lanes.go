package dispatch

// The lanes: one per key, each a run of messages in stream order.

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

// lane is one key's messages in stream order; q[0] is the head.
type lane struct {
	key string // "" for an unkeyed message, alone in its lane
	q   []*delivery
	evs []*envelope.Event
	// tgs are each message's route targets while its destinations are
	// still to be checked (nil once checked).
	tgs [][]string
	// ctx is the epoch the lane was made in; gone says the lease was lost
	// since: the lane was dropped, and nothing more is done for it.
	ctx  context.Context
	gone bool
}

// admit parses and routes a message (worker.go) and queues it in its lane.
// Its destinations are checked in the lane, not here: a check that fails
// (the deployment cannot be asked, a dead letter not written) makes the
// event wait in its place, where a hand-back would let its key's later
// events overtake it, and a slow check holds up its lane, not the pull.
// Events not for this sink are not ordered: they go alone in an unkeyed
// lane, to be checked and acked (or handed back) there.
// A message this replica holds already (its ack deadline passed while it
// waited, and JetStream sent it again) is dropped: the one held keeps its
// place, and settling it settles both. A message is told from another at
// the same sequence by when its stream stored it, stored (order_remade.go).
func (o *orderer) admit(ctx context.Context, msg jetstream.Msg, origin uint64, stored time.Time) {
	o.mu.Lock()
	dup := origin != 0 && o.origins[heldKey{origin, stored.UnixNano()}]
	epoch := o.epoch
	o.mu.Unlock()
	if dup {
		return
	}
	d, ev, targets, ok := o.w.parseRouteGuarded(ctx, job{msg: msg})
	if !ok {
		return // settled: invalid
	}
	key := ""
	if slices.Contains(targets, o.w.name) {
		key = o.key(ev)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.epoch != epoch {
		return // the lease was lost meanwhile: dropped with the lanes
	}
	l := o.lanes[key]
	if key == "" || l == nil {
		l = &lane{key: key, ctx: epoch}
		if key != "" {
			o.lanes[key] = l
		}
		o.all[l] = true
		o.readyLocked(l)
	}
	// In stream order: a new holder gathers what the old one held (handed
	// back or due) after newer messages of the same keys, and puts it
	// ahead of them before it delivers anything (order_lease.go).
	i, _ := slices.BinarySearchFunc(l.q, d.origin, func(e *delivery, origin uint64) int { return cmp.Compare(e.origin, origin) })
	l.q, l.evs, l.tgs = slices.Insert(l.q, i, d), slices.Insert(l.evs, i, ev), slices.Insert(l.tgs, i, targets)
	o.origins[heldKeyOf(d)] = true
}

func (o *orderer) readyLocked(l *lane) {
	o.ready = append(o.ready, l)
	select {
	case o.signal <- struct{}{}:
	default:
	}
}

// next takes a ready lane while the pin's lease is proven, or returns nil
// once ctx is done. Unproven, the lanes wait: the lease signals when it
// is proven again.
func (o *orderer) next(ctx context.Context) *lane {
	for {
		o.mu.Lock()
		if ctx.Err() != nil {
			o.mu.Unlock()
			return nil
		}
		if len(o.ready) > 0 && o.mayLocked(time.Now()) {
			// In a new pin's catch-up, a lane whose head is newer than
			// what was delivered before the pin moved waits (it stays
			// ready; the lease signals when the catch-up is over).
			i := slices.IndexFunc(o.ready, func(l *lane) bool { return len(l.q) > 0 && startsInCatchUp(o.catchUpToLocked(), l.key, l.q[0].origin) })
			if i >= 0 {
				l := o.ready[i]
				o.ready = slices.Delete(o.ready, i, i+1)
				if len(o.ready) > 0 {
					select { // more for another worker
					case o.signal <- struct{}{}:
					default:
					}
				}
				o.mu.Unlock()
				return l
			}
		}
		o.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-o.signal:
		}
	}
}

// step makes one attempt for a lane's head and settles it, or schedules
// the lane's next try. A lane is in one place at a time: ready, in a step,
// or waiting on a timer. A lost lease waits for the steps under way
// (flight) before it hands their messages back.
func (o *orderer) step(ctx, workCtx context.Context, l *lane) {
	o.mu.Lock()
	if l.gone {
		o.mu.Unlock()
		return // dropped with the lease: no attempt
	}
	d, ev, targets := l.q[0], l.evs[0], l.tgs[0]
	flight := o.flight
	flight.Add(1)
	o.mu.Unlock()
	defer flight.Done()
	w := o.w
	if l.key == "" {
		w.resolveDeliverGuarded(l.ctx, d, ev, targets) // unordered: the usual path
		o.pop(l, d)
		return
	}
	if targets != nil {
		panicked, err := w.checkGuarded(l.ctx, d, ev, targets)
		switch {
		case panicked:
			o.pop(l, d) // guard dead-lettered it
			return
		case err != nil:
			// In place, as a retry: a hand-back would let the key's
			// later events overtake it.
			w.log.Warn("destinations not checked; the event waits in place, later events of its key behind it",
				zap.String("event_id", clip(ev.ID)), zap.String("sink", w.name), zap.Error(err))
			o.after(ctx, l, time.Second)
			return
		}
		o.mu.Lock()
		if i := slices.Index(l.q, d); i >= 0 {
			l.tgs[i] = nil
		}
		o.mu.Unlock()
	}
	v, derr, err, panicked := w.attemptGuarded(l.ctx, d, ev)
	o.mu.Lock()
	gone := l.gone
	o.mu.Unlock()
	var shut errShut
	switch {
	case gone && !panicked:
		// The lease was lost during the attempt (which it cancelled):
		// settle nothing, the pinned replica has the message now.
	case panicked:
		o.pop(l, d) // guard dead-lettered it
	case errors.Is(err, errExpired), errors.As(err, &shut) && w.expired(d, time.Now()):
		// Past max_elapsed while the gate was shut: dead-lettered
		// (worker.go's expired), which releases the barrier.
		rec := w.expiredRecord(d, ev)
		rec.ReleasedBarrier = true
		w.deadLetter(workCtx, d, rec)
		o.pop(l, d)
	case errors.As(err, &shut):
		o.after(ctx, l, shut.wait) // the gate is shut: the lane waits, in order
	case err != nil:
		return // shutting down: the lane is handed back in order
	case v.Action == DeadLetter:
		// The barrier is released: the next event of the key goes on.
		rec := w.record(d, ev, w.name, v.Reason, derr)
		rec.ReleasedBarrier = true
		w.deadLetter(workCtx, d, rec)
		o.pop(l, d)
	case v.Action == Ack:
		w.settle(workCtx, d, ev, v, derr)
		o.pop(l, d)
	case ctx.Err() != nil:
		return // a retry or hand-back while shutting down: handed back in order
	case v.Action == Retry:
		// In place: the head keeps its history and its place.
		d.history.Counted = v.Counted
		status, code := statusCode(derr)
		w.obs.Retried(w.name, status)
		w.recordRetrying(d, ev, derr, time.Now().Add(v.Delay))
		w.log.Info("delivery failed; retrying in place, later events of its key wait", zap.String("event_id", clip(ev.ID)),
			zap.String("sink", w.name), zap.Int("attempt", d.history.Attempts), zap.Int("status", status),
			zap.String("code", clip(code)), zap.Duration("delay", v.Delay), zap.Error(derr))
		o.after(ctx, l, v.Delay)
	default: // HandBack
		// Cut short though not shutting down (a context error from the
		// sink): not an attempt; try again shortly, keeping the place.
		o.after(ctx, l, max(v.Delay, 100*time.Millisecond))
	}
}

// after makes the lane ready again after wait (unless shutting down).
func (o *orderer) after(ctx context.Context, l *lane, wait time.Duration) {
	time.AfterFunc(wait, func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		if ctx.Err() == nil && !l.gone {
			o.readyLocked(l)
		}
	})
}

// pop removes the settled message d, the lane's head when its step began;
// the lane goes on with its next message or is gone.
func (o *orderer) pop(l *lane, d *delivery) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if l.gone {
		return // dropped with the lease meanwhile
	}
	i := slices.Index(l.q, d)
	if i < 0 {
		return
	}
	o.pops++
	delete(o.origins, heldKeyOf(d))
	if to := o.catchUpToLocked(); to != 0 && d.origin <= to {
		o.kickLease() // one delivered before the pin moved: the ack floor may have reached the catch-up's end
	}
	l.q, l.evs, l.tgs = slices.Delete(l.q, i, i+1), slices.Delete(l.evs, i, i+1), slices.Delete(l.tgs, i, i+1)
	if len(l.q) > 0 {
		o.readyLocked(l)
		return
	}
	delete(o.all, l)
	if l.key != "" {
		delete(o.lanes, l.key)
	}
}

// held is every message in the lanes, in stream order.
func (o *orderer) held() []jetstream.Msg {
	o.mu.Lock()
	var ds []*delivery
	for l := range o.all {
		ds = append(ds, l.q...)
	}
	o.mu.Unlock()
	slices.SortFunc(ds, func(a, b *delivery) int { return cmp.Compare(a.origin, b.origin) })
	out := make([]jetstream.Msg, len(ds))
	for i, d := range ds {
		out[i] = d.msg
	}
	return out
}
