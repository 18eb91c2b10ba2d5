package dispatch

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Per-key order (a sink with `order`): events with the same key reach the
// vendor in the order they were published; while one is being retried the
// later ones of its key wait behind it (a barrier), and other keys go on.
//
//   - One replica at a time: the sink's events consumer is a pinned
//     priority group (topology.OrderGroup). Every replica pulls, the server
//     delivers to one, and moves to another when that one stops pulling
//     for PinnedTTL (orderPinnedTTL).
//   - In it, messages go into a lane per key, in the order they arrive
//     (stream order); a lane runs one message at a time, up to the sink's
//     concurrency lanes at once.
//   - A retry happens in place: the head stays unacked, kept alive, and is
//     tried again after Decide's delay; the lane's later messages wait.
//     Decide makes every verdict, as for any sink.
//   - A dead letter releases the barrier: the record is written (marked
//     released_barrier), the head acked, and the next message goes on.
//   - Gate shut (breaker open, Retry-After): lanes wait; nothing is handed
//     back, so nothing can come back out of order.
//   - Shutdown: every message held is handed back in stream order, and the
//     pin released so another replica takes over at once. Plainly, even a
//     head waiting on its backoff: a NAK delay would let the next replica
//     get the key's events this one never pulled before the delayed ones
//     fall due (TestOrderShutdownWithAHeadOnItsBackoffKeepsOrder). The next
//     replica tries the head at once; its backoff starts over.
//   - The pin is a lease: a replica that has not heard from the server for
//     orderLease (or sees its pin change) drops every lane unsettled,
//     cancels its attempts and pulls nothing until whatever it held is due
//     for redelivery; see loseLease.
//
// Events without a key (empty, or a template that fails on them) take the
// unordered path, with scheduled retries, as do replays and the sink's
// retry consumer.

// orderPull is the ordered consumer's pull expiry: a live replica sends a
// pull request at least this often, which is what keeps it pinned.
const orderPull = 5 * time.Second

// orderPinnedTTL is how long the server waits for a pinned replica's next
// pull before pinning another. A replica that dies stopped sending
// in-progress acks at most when it stopped pulling, and its last pull was
// at most orderPull before that: so with a TTL of ack_wait + orderPull
// (and a second for the server's timers), every message it held is due
// for redelivery before a new replica is pinned, and JetStream delivers
// due redeliveries first, in stream order. No later event of a key can
// overtake one a dead replica held (TestOrderSurvivesAReplicaCrash).
func orderPinnedTTL(ackWait time.Duration) time.Duration {
	return ackWait + orderPull + time.Second
}

// pinHeader names the pin a message was delivered under.
const pinHeader = "Nats-Pin-Id"

// orderKeyFunc makes an event's order key ("" for none) from the config.
func orderKeyFunc(o *config.Order, log *zap.Logger) (func(*envelope.Event) string, error) {
	if o.Key == config.OrderByUser {
		// The partition key without its id fallback: events without a
		// user are not ordered, and a user's events share a partition.
		return func(ev *envelope.Event) string { return ev.UserKey() }, nil
	}
	t, err := o.Template()
	if err != nil {
		return nil, err
	}
	return func(ev *envelope.Event) string {
		var b strings.Builder
		if err := t.Execute(&b, ev); err != nil {
			// A field this event lacks (.Track.Name on an identify): it
			// has no key, so it is not ordered.
			log.Debug("order key template failed; delivering the event unordered",
				zap.String("event_id", clip(ev.ID)), zap.Error(err))
			return ""
		}
		return b.String()
	}, nil
}

// orderer runs one ordered consumer's lanes. Partitioned or not, there is
// one per consumer: order holds within what one consumer delivers.
type orderer struct {
	w    *sinkWorker
	key  func(*envelope.Event) string
	cons jetstream.Consumer

	mu      sync.Mutex
	lanes   map[string]*lane // keyed lanes holding messages
	all     map[*lane]bool   // every lane holding messages, keyed or not
	origins map[uint64]bool  // the messages held, by topology.Origin (partition and sequence)
	ready   []*lane
	signal  chan struct{} // a lane became ready
	pinID   string        // the pin the server gave this replica last

	// The lease: heard is when the server was last heard from (a message,
	// or an answered in-progress ack); epoch is the context of the lanes
	// made since the last loss, cancelled (with their attempts) when it is
	// lost; stopPull stops the current pull, and pause tells feed to pull
	// nothing for a while.
	heard    time.Time
	work     context.Context // run's workCtx, which every epoch is cut from
	epoch    context.Context
	endEpoch context.CancelFunc
	stopPull func()
	pause    bool
}

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

func newOrderer(w *sinkWorker, key func(*envelope.Event) string, cons jetstream.Consumer) *orderer {
	return &orderer{w: w, key: key, cons: cons, lanes: map[string]*lane{}, all: map[*lane]bool{}, origins: map[uint64]bool{}, signal: make(chan struct{}, 1)}
}

// run pulls, feeds the lanes and works them with concurrency workers until
// ctx is done; in-flight attempts finish under workCtx. It then hands back
// what it holds, in stream order, and releases the pin.
func (o *orderer) run(ctx, workCtx context.Context, prefetch, concurrency int) {
	o.mu.Lock()
	o.work = workCtx
	o.epoch, o.endEpoch = context.WithCancel(workCtx)
	o.mu.Unlock()
	var wg sync.WaitGroup
	var leftover []jetstream.Msg
	wg.Go(func() { leftover = o.feed(ctx, workCtx, prefetch) })
	for range concurrency {
		wg.Go(func() {
			for l := o.next(ctx); l != nil; l = o.next(ctx) {
				o.step(ctx, workCtx, l)
			}
		})
	}
	stopKeep := o.keepAlive(ctx, o.w.ackWait/3)
	stopWatch := o.watchLease(orderLease(o.w.ackWait))
	wg.Wait()
	stopWatch()
	stopKeep()
	o.mu.Lock()
	o.endEpoch()
	o.mu.Unlock()
	if o.handBackAll(ctx, leftover) {
		o.unpin(ctx)
	}
}

// unpin lets the next replica take over at once instead of after the
// pinned TTL: everything this one held is handed back, in order. Only the
// pinned replica may: unpinning another would let a third take messages
// while that one still holds earlier ones of the same keys.
func (o *orderer) unpin(ctx context.Context) {
	o.mu.Lock()
	pin := o.pinID
	o.mu.Unlock()
	if pin == "" {
		return
	}
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), brokerTimeout)
	defer cancel()
	info, err := o.cons.Info(uctx)
	if err != nil {
		return // the pin times out by itself
	}
	for _, g := range info.PriorityGroups {
		if g.Group == topology.OrderGroup && g.PinnedClientID == pin {
			if s, err := o.w.js.Stream(uctx, info.Stream); err == nil {
				_ = s.UnpinConsumer(uctx, info.Name, topology.OrderGroup)
			}
		}
	}
}

// feed pulls in the order group and puts each message of this sink into
// its key's lane. It keeps pulling while the gate is shut (the lanes
// wait), since a replica that stops pulling loses the pin while it still
// holds messages. It returns what arrived after ctx ended, unadmitted.
func (o *orderer) feed(ctx, workCtx context.Context, prefetch int) (leftover []jetstream.Msg) {
	for ctx.Err() == nil {
		if o.paused() {
			// The lease was lost: pull nothing until every message this
			// replica held or had buffered is due for redelivery (its
			// last in-progress ack is older than ack_wait) and the pin has
			// timed out, so whoever pulls next, this replica included, gets
			// them again before any later message of their keys.
			o.w.log.Warn("ordered pull paused after losing the pin's lease", zap.String("sink", o.w.name),
				zap.Duration("for", orderPinnedTTL(o.w.ackWait)))
			if sleep(ctx, orderPinnedTTL(o.w.ackWait), nil) != nil {
				return leftover
			}
		}
		it, err := o.cons.Messages(
			jetstream.PullPriorityGroup(topology.OrderGroup),
			jetstream.PullMaxMessages(prefetch),
			jetstream.PullHeartbeat(orderPull/5),
			jetstream.PullExpiry(orderPull),
			// Missed heartbeats come back from Next (the iterator's
			// default, stated because the lease's log relies on it; the
			// lease itself is kept by watchLease whatever Next reports).
			jetstream.WithMessagesErrOnMissingHeartbeat(true),
		)
		if err != nil {
			o.w.log.Warn("pull failed; retrying", zap.String("sink", o.w.name), zap.Error(err))
			if sleep(ctx, time.Second, nil) != nil {
				return leftover
			}
			continue
		}
		o.mu.Lock()
		o.stopPull = it.Stop // Stop, not Drain: what is buffered is dropped with the lanes
		o.mu.Unlock()
		stop := context.AfterFunc(ctx, it.Drain)
		var redelivered []originMsg
		flush := func() {
			slices.SortFunc(redelivered, func(a, b originMsg) int { return cmp.Compare(a.origin, b.origin) })
			for _, r := range redelivered {
				o.admit(workCtx, r.msg, r.origin)
			}
			redelivered = redelivered[:0]
		}
		for {
			var opts []jetstream.NextOpt
			if len(redelivered) > 0 {
				opts = append(opts, jetstream.NextMaxWait(redeliveryQuiet))
			}
			msg, err := it.Next(opts...)
			if errors.Is(err, nats.ErrTimeout) {
				flush()
				continue
			}
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
				if ctx.Err() != nil {
					for _, r := range redelivered {
						leftover = append(leftover, r.msg)
					}
					redelivered = nil
				}
				o.mu.Lock()
				if o.pause {
					redelivered = nil // dropped with the lanes, unsettled
				}
				o.mu.Unlock()
				flush()
				break
			}
			if err != nil {
				o.w.log.Warn("pull interrupted; continuing", zap.String("sink", o.w.name), zap.Error(err))
				if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
					it.Stop()
					flush()
					_ = sleep(ctx, time.Second, nil)
					break
				}
				continue
			}
			if ctx.Err() != nil {
				leftover = append(leftover, msg)
				continue
			}
			o.hear(time.Now())
			if pin := msg.Headers().Get(pinHeader); pin != "" {
				o.mu.Lock()
				moved := o.pinID != "" && o.pinID != pin
				o.mu.Unlock()
				// A new pin while holding messages of the old one: the
				// server gave the pin away meanwhile, and may have given
				// what this replica holds to another.
				if moved && o.loseLease("the pin moved") {
					continue // the iterator is stopped: this message is dropped too
				}
				o.mu.Lock()
				o.pinID = pin
				o.mu.Unlock()
			}
			meta, err := msg.Metadata()
			if err != nil {
				o.admit(workCtx, msg, 0) // admit terminates it
				continue
			}
			if meta.NumDelivered > 1 {
				// JetStream sends every due redelivery before any new
				// message, but in the order they fell due, which a crash or
				// hand-back can leave out of stream order: gather the run
				// and sort it before it enters the lanes.
				redelivered = append(redelivered, originMsg{msg, topology.Origin(meta.Stream, meta.Sequence.Stream)})
				continue
			}
			flush()
			o.admit(workCtx, msg, topology.Origin(meta.Stream, meta.Sequence.Stream))
		}
		stop()
		o.mu.Lock()
		o.stopPull = nil
		o.mu.Unlock()
	}
	return leftover
}

// orderLease is how long an ordered replica keeps delivering without
// hearing from the server. Its held messages were last kept alive at most
// that long ago, so none is due for redelivery (ack_wait) and no other
// replica can have been pinned (PinnedTTL, longer still) before it stops:
// a quarter of ack_wait is the margin for an attempt already on its way.
// The keep-alive renews it every ack_wait/3, so one late answer is not a
// loss.
func orderLease(ackWait time.Duration) time.Duration { return ackWait * 3 / 4 }

// hear renews the lease: the server was heard from at t.
func (o *orderer) hear(t time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if t.After(o.heard) {
		o.heard = t
	}
}

// paused reports, once, that a lost lease asks feed to stop pulling.
func (o *orderer) paused() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	p := o.pause
	o.pause = false
	return p
}

// watchLease drops the lanes once the server has not been heard from for
// bound while they hold messages.
func (o *orderer) watchLease(bound time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(max(bound/16, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				if o.leaseExpired(now, bound) {
					o.loseLease("the server was not heard from for " + bound.String())
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (o *orderer) leaseExpired(now time.Time, bound time.Duration) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.all) > 0 && now.Sub(o.heard) > bound
}

// loseLease drops every lane without settling anything: no ack, no NAK
// (JetStream redelivers them, in order, to whoever holds the pin once
// they are due; a NAK would make them due before this replica's later
// in-progress acks are known to be gone). Attempts in flight are
// cancelled, none is started for a dropped lane, and feed stops its pull
// and pauses. It reports whether anything was dropped; holding nothing,
// there is nothing to lose.
func (o *orderer) loseLease(why string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.all) == 0 {
		return false
	}
	n := 0
	for l := range o.all {
		l.gone = true
		n += len(l.q)
	}
	clear(o.all)
	clear(o.lanes)
	clear(o.origins)
	o.ready = nil
	o.endEpoch()
	o.epoch, o.endEpoch = context.WithCancel(o.work)
	o.pinID = ""
	o.pause = true
	if o.stopPull != nil {
		o.stopPull()
	}
	o.w.log.Warn("lost the ordered consumer's pin lease; dropped what this replica held, for the pinned replica to deliver in order",
		zap.String("sink", o.w.name), zap.String("why", why), zap.Int("dropped", n))
	return true
}

// originMsg is a message with its origin (topology.Origin: partition and
// sequence; one consumer reads one stream, so origins sort as sequences).
type originMsg struct {
	msg    jetstream.Msg
	origin uint64
}

// redeliveryQuiet is how long a run of redeliveries may pause before it is
// taken as complete: JetStream sends them back to back, so a pause this
// long is the end of the run, not a pull round trip inside it.
const redeliveryQuiet = 100 * time.Millisecond

// admit parses and routes a message (worker.go) and queues it in its lane.
// Its destinations are checked in the lane, not here: a check that fails
// (the deployment cannot be asked, a dead letter not written) makes the
// event wait in its place, where a hand-back would let its key's later
// events overtake it, and a slow check holds up its lane, not the pull.
// Events not for this sink are not ordered: they go alone in an unkeyed
// lane, to be checked and acked (or handed back) there.
// A message this replica holds already (its ack deadline passed while it
// waited, and JetStream sent it again) is dropped: the one held keeps its
// place, and settling it settles both.
func (o *orderer) admit(ctx context.Context, msg jetstream.Msg, origin uint64) {
	o.mu.Lock()
	dup := origin != 0 && o.origins[origin]
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
	l.q, l.evs, l.tgs = append(l.q, d), append(l.evs, ev), append(l.tgs, targets)
	o.origins[d.origin] = true
}

func (o *orderer) readyLocked(l *lane) {
	o.ready = append(o.ready, l)
	select {
	case o.signal <- struct{}{}:
	default:
	}
}

// next takes a ready lane, or returns nil once ctx is done.
func (o *orderer) next(ctx context.Context) *lane {
	for {
		o.mu.Lock()
		if ctx.Err() != nil {
			o.mu.Unlock()
			return nil
		}
		if len(o.ready) > 0 {
			l := o.ready[0]
			o.ready = o.ready[1:]
			if len(o.ready) > 0 {
				select { // more for another worker
				case o.signal <- struct{}{}:
				default:
				}
			}
			o.mu.Unlock()
			return l
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
// or waiting on a timer.
func (o *orderer) step(ctx, workCtx context.Context, l *lane) {
	o.mu.Lock()
	if l.gone {
		o.mu.Unlock()
		return // dropped with the lease: no attempt
	}
	d, ev, targets := l.q[0], l.evs[0], l.tgs[0]
	o.mu.Unlock()
	w := o.w
	if l.key == "" {
		w.resolveDeliverGuarded(l.ctx, d, ev, targets) // unordered: the usual path
		o.pop(l)
		return
	}
	if targets != nil {
		panicked, err := w.checkGuarded(l.ctx, d, ev, targets)
		switch {
		case panicked:
			o.pop(l) // guard dead-lettered it
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
		l.tgs[0] = nil
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
		o.pop(l) // guard dead-lettered it
	case errors.Is(err, errExpired), errors.As(err, &shut) && w.expired(d, time.Now()):
		// Past max_elapsed while the gate was shut: dead-lettered
		// (worker.go's expired), which releases the barrier.
		rec := w.expiredRecord(d, ev)
		rec.ReleasedBarrier = true
		w.deadLetter(workCtx, d, rec)
		o.pop(l)
	case errors.As(err, &shut):
		o.after(ctx, l, shut.wait) // the gate is shut: the lane waits, in order
	case err != nil:
		return // shutting down: the lane is handed back in order
	case v.Action == DeadLetter:
		// The barrier is released: the next event of the key goes on.
		rec := w.record(d, ev, w.name, v.Reason, derr)
		rec.ReleasedBarrier = true
		w.deadLetter(workCtx, d, rec)
		o.pop(l)
	case v.Action == Ack:
		w.settle(workCtx, d, ev, v, derr)
		o.pop(l)
	case ctx.Err() != nil:
		return // a retry or hand-back while shutting down: handed back in order
	case v.Action == Retry:
		// In place: the head keeps its history and its place.
		d.history.Counted = v.Counted
		status, code := statusCode(derr)
		w.obs.Retried(w.name, status)
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

// pop removes the settled head; the lane goes on with its next message
// or is gone.
func (o *orderer) pop(l *lane) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if l.gone {
		return // dropped with the lease meanwhile
	}
	delete(o.origins, l.q[0].origin)
	l.q[0], l.evs[0], l.tgs[0] = nil, nil, nil
	l.q, l.evs, l.tgs = l.q[1:], l.evs[1:], l.tgs[1:]
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

// keepAlive sends in-progress acks for every held message (waiting or in
// flight) every interval, all at once and in stream order: their ack
// deadlines then follow stream order, so if this replica dies they fall
// due, and are redelivered, in stream order too. A per-message timer
// would not keep that. The last one is a request: JetStream's answer
// says it had all of them (a connection's acks are taken in order), which
// renews the lease from when they were sent.
func (o *orderer) keepAlive(ctx context.Context, every time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				msgs := o.held()
				if len(msgs) == 0 {
					continue
				}
				sent := time.Now()
				for _, m := range msgs[:len(msgs)-1] {
					_ = m.InProgress()
				}
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), every)
				_, err := o.w.js.Conn().RequestWithContext(rctx, msgs[len(msgs)-1].Reply(), []byte("+WPI"))
				cancel()
				if err == nil {
					o.hear(sent)
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// handBackAll returns every held message and those that arrived during
// shutdown to JetStream, in stream order, so whoever is pinned next gets
// them in that order. The last hand-back waits for JetStream's answer:
// it reports whether all of them are in (JetStream takes a connection's
// acks in order), so the pin may go to another replica.
func (o *orderer) handBackAll(ctx context.Context, leftover []jetstream.Msg) (confirmed bool) {
	msgs := o.held()
	seq := func(m jetstream.Msg) uint64 {
		if meta, err := m.Metadata(); err == nil {
			return meta.Sequence.Stream
		}
		return 0
	}
	slices.SortStableFunc(leftover, func(a, b jetstream.Msg) int { return cmp.Compare(seq(a), seq(b)) })
	msgs = append(msgs, leftover...)
	if len(msgs) == 0 {
		return true
	}
	for _, m := range msgs[:len(msgs)-1] {
		_ = m.Nak()
	}
	last := msgs[len(msgs)-1]
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), brokerTimeout)
	defer cancel()
	_, err := o.w.js.Conn().RequestWithContext(rctx, last.Reply(), []byte("-NAK"))
	return err == nil
}

// parseRouteGuarded is parseRoute under guard: a panic dead-letters the
// message and reports it settled.
func (w *sinkWorker) parseRouteGuarded(ctx context.Context, j job) (d *delivery, ev *envelope.Event, targets []string, ok bool) {
	defer w.guard(ctx, j.msg)
	return w.parseRoute(ctx, j)
}

// resolveDeliverGuarded is the usual path's rest under guard: resolve,
// then deliver if the event is this sink's.
func (w *sinkWorker) resolveDeliverGuarded(ctx context.Context, d *delivery, ev *envelope.Event, targets []string) {
	defer w.guard(ctx, d.msg)
	if w.resolve(ctx, d, ev, targets) {
		w.deliver(ctx, d, ev)
	}
}

// checkGuarded is checkDestinations under guard; panicked says guard
// dead-lettered the message.
func (w *sinkWorker) checkGuarded(ctx context.Context, d *delivery, ev *envelope.Event, targets []string) (panicked bool, err error) {
	panicked = true
	defer w.guard(ctx, d.msg)
	return false, w.checkDestinations(ctx, d, ev, targets)
}

// attemptGuarded is attempt under guard, without the per-message
// in-progress acks (the orderer sends them, in stream order). panicked
// says guard dead-lettered the message.
func (w *sinkWorker) attemptGuarded(ctx context.Context, d *delivery, ev *envelope.Event) (v Verdict, derr, err error, panicked bool) {
	panicked = true
	defer w.guard(ctx, d.msg)
	v, derr, err = w.attempt(ctx, d, ev, false)
	return v, derr, err, false
}

// runOrdered is run for a sink with order: its events consumer goes
// through the lanes; its retry consumer (replays, and retries of events
// without a key) through a few workers of the usual path.
func (b boundSink) runOrdered(ctx, workCtx context.Context) {
	jobs := make(chan job)
	var feeders, workers sync.WaitGroup
	n := max(b.concurrency/4, 1)
	feeders.Go(func() { consume(ctx, b.cons.Retries, true, n, b.w.gate, jobs, b.w.log) })
	for range n {
		workers.Go(func() {
			for j := range jobs {
				b.w.handle(workCtx, j)
			}
		})
	}
	// One orderer per partition: a key never leaves its partition, so its
	// order is one consumer's. The sink's gate keeps the requests in
	// flight within concurrency across them.
	var orderers sync.WaitGroup
	pull := partitionPrefetch(prefetch(b.concurrency), len(b.cons.Events))
	for _, c := range b.cons.Events {
		orderers.Go(func() { newOrderer(b.w, b.orderKey, c).run(ctx, workCtx, pull, b.concurrency) })
	}
	orderers.Wait()
	feeders.Wait()
	close(jobs)
	workers.Wait()
	b.w.held.Wait()
}
