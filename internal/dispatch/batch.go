package dispatch

import (
	"context"
	"errors"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// batcher is the delivery step of a sink that batches (a sinks.BatchSink
// with a batch key). The workers parse and route as for any sink (handle),
// then hand each event here instead of delivering it: one collector cuts
// the stream into batches of up to maxItems, or what came within maxWait
// of a batch's first event, and the sink's senders deliver each batch in
// one DeliverBatch call through the gate. Each event then takes the same
// path as alone: its own History and verdict (Decide) and its own
// settlement (settle), so an event is acked only if the vendor accepted
// it, a rejected one is dead-lettered alone, and a failed batch retries
// each of its events per the policy.
type batcher struct {
	w        *sinkWorker
	sink     sinks.BatchSink
	maxItems int
	maxWait  time.Duration
	in       chan batchItem
	// key, for a sinks.KeyedBatchSink, is the event's key: the batcher
	// then batches per key (batch_keyed.go), holding at most hold events.
	key  func(*envelope.Event) string
	hold int
}

// batchItem is an event for a batch. A keyed batcher admits items by
// ticket; an item without a delivery is a ticket's message settled
// without a batch (pass).
type batchItem struct {
	d      *delivery
	ev     *envelope.Event
	ticket uint64
	// passed is a passed ticket's delivery, when its message was read that
	// far: what its consumer had pending behind it still counts (a keyed
	// batcher's backlog end).
	passed *delivery
}

// newBatcher makes a sink's batcher. maxAckPending is the sink's: what a
// keyed batcher holds stays within it, less the pull's prefetch and the
// workers', or the server would stop delivering while the batcher waits
// for more.
func newBatcher(w *sinkWorker, s sinks.BatchSink, maxItems int, maxWait time.Duration, maxAckPending, concurrency int) *batcher {
	b := &batcher{w: w, sink: s, maxItems: max(min(maxItems, s.MaxBatch()), 1), maxWait: maxWait, in: make(chan batchItem)}
	if ks, ok := s.(sinks.KeyedBatchSink); ok {
		b.key = ks.BatchKey
		b.hold = max(maxAckPending-heldPrefetch(concurrency)-concurrency, b.maxItems)
		// The keyed collector is one goroutine that every event and every
		// batch passes through: handed each event on an unbuffered
		// channel it was woken once per event, and waited, runnable, for
		// a processor behind the workers and senders (a scheduler trace of
		// the batched Metrix run: 1.5 s of scheduling delay a second,
		// while the senders waited for batches). Buffered, it takes what
		// the workers handed over in one run. Order is the tickets'
		// (admit), and what waits here is pulled and kept alive as any
		// message the workers hold.
		b.in = make(chan batchItem, keyedInBuffer)
	}
	return b
}

// keyedInBuffer is how many events the workers may hand a keyed collector
// ahead of it.
const keyedInBuffer = 256

// prefetch is how many messages to keep pulled: enough to fill a batch
// while the one before is delivered. They wait for their batch and its
// gate slot kept alive by the pull's keeper (consume), so a slow vendor
// does not make them outlive ack_wait.
// A keyed batcher holds its events itself (hold), and pulls little
// (held: heldPrefetch, what newBatcher left out of its hold).
func (b *batcher) prefetch(perEvent, held int) int {
	if b.key != nil {
		return held
	}
	return max(perEvent, 2*b.maxItems)
}

// add hands an event to the collector; on shutdown it is handed back. It
// reports whether the collector took it.
func (b *batcher) add(ctx context.Context, ticket uint64, d *delivery, ev *envelope.Event) bool {
	if b.key != nil {
		// Every ticket reaches the keyed collector, which admits them in
		// turn: it takes items until it is closed, after the workers.
		b.in <- batchItem{d: d, ev: ev, ticket: ticket}
		return true
	}
	select {
	case b.in <- batchItem{d: d, ev: ev}:
		return true
	case <-ctx.Done():
		b.w.handBack(d, 0)
		return false
	}
}

// pass tells a keyed collector that ticket's message was settled without
// a batch (not this sink's, invalid, dead-lettered), so the next ticket's
// turn comes.
func (b *batcher) pass(ticket uint64, d *delivery) {
	if b.key != nil {
		b.in <- batchItem{ticket: ticket, passed: d}
	}
}

// start runs the collector and senders senders; stop, called once no
// more add calls come, delivers what was collected and waits for it.
func (b *batcher) start(ctx context.Context, senders int) (stop func()) {
	if b.key != nil {
		return b.startKeyed(ctx, senders)
	}
	batches := make(chan []batchItem)
	var collector, send sync.WaitGroup
	collector.Go(func() {
		b.collect(batches)
		close(batches)
	})
	for range senders {
		send.Go(func() {
			for batch := range batches {
				b.send(ctx, batch, false)
			}
		})
	}
	return func() {
		close(b.in)
		collector.Wait()
		send.Wait()
	}
}

// collect cuts batches until in is closed.
func (b *batcher) collect(out chan<- []batchItem) {
	for {
		first, ok := <-b.in
		if !ok {
			return
		}
		batch := append(make([]batchItem, 0, b.maxItems), first)
		timer := time.NewTimer(b.maxWait)
	fill:
		for len(batch) < b.maxItems {
			select {
			case it, ok := <-b.in:
				if !ok {
					break fill
				}
				batch = append(batch, it)
			case <-timer.C:
				break fill
			}
		}
		timer.Stop()
		out <- batch
	}
}

// send is deliver (worker.go) for a batch: one gate slot, one
// DeliverBatch, then a verdict and a settlement per event. inPlace (a
// keyed batch, batch_keyed.go) keeps what is to be retried, in order,
// instead of scheduling it: send returns it (again) with how long to wait,
// and, if the gate turned it away, the gate's change (wake), which ends the
// wait early: an operator's resumption or a pause's end is not waited out.
func (b *batcher) send(ctx context.Context, items []batchItem, inPlace bool) (again []batchItem, wait time.Duration, wake <-chan struct{}) {
	w := b.w
	// No attempt after max_elapsed (worker.go's expired).
	live := make([]batchItem, 0, len(items))
	for _, it := range items {
		if w.expired(it.d, time.Now()) {
			w.expire(ctx, it.d, it.ev)
		} else {
			live = append(live, it)
		}
	}
	if items = live; len(items) == 0 {
		return nil, 0, nil
	}
	done, vendorDown, err := w.gate.acquire(ctx)
	if err != nil {
		var shut errShut
		isShut := errors.As(err, &shut) // else shutting down: no wait
		for _, it := range items {
			if isShut && w.expired(it.d, time.Now()) {
				w.expire(ctx, it.d, it.ev)
				continue
			}
			if isShut && inPlace {
				// A hand-back would let the key's later events overtake.
				again = append(again, it)
				continue
			}
			w.handBack(it.d, shut.wait)
		}
		wait = max(shut.wait, 10*time.Millisecond)
		if len(again) > 0 {
			// Woken by the gate's next change: a shut gate's wait (a
			// second while an operator pauses the sink) is not its end.
			if left, changed := w.gate.shutFor(time.Now()); left > 0 {
				wake = changed
			} else {
				wait = 10 * time.Millisecond // opened meanwhile
			}
		}
		return again, wait, wake
	}
	now := time.Now()
	before := make([]History, len(items))
	ds := make([]*sinks.Delivery, len(items))
	msgs := make([]jetstream.Msg, len(items))
	for i, it := range items {
		before[i] = it.d.history
		it.d.history.Attempts++
		if it.d.history.First.IsZero() {
			it.d.history.First = now
		}
		ds[i] = &sinks.Delivery{Event: it.ev, ReceivedAt: it.d.received}
		msgs[i] = it.d.msg
	}
	stop := keepAlive(w.ackWait/3, msgs...)
	errs, ok := b.deliver(ctx, ds)
	stop()
	if !ok {
		// The sink panicked or broke its contract: not an attempt. Each
		// event goes the per-event way, whose guard dead-letters the one
		// that panics and delivers the others.
		done(errNotARequest)
		for i, it := range items {
			it.d.history = before[i]
			func() {
				defer w.guard(ctx, it.d.msg)
				w.deliver(ctx, it.d, it.ev)
			}()
		}
		return nil, 0, nil
	}
	for i, it := range items {
		if unsent(errs[i]) {
			it.d.history = before[i] // no request carried it: not an attempt
		}
	}
	spans := b.startBatchAttempts(ctx, items, now)
	result := batchResult(errs)
	cut := result != nil && ctx.Err() != nil // our own shutdown, not the vendor
	w.obs.VendorRequest(w.name, time.Since(now), result)
	var pause time.Duration
	for _, err := range errs {
		if err != nil {
			pause = max(pause, w.throttlePause(err))
		}
	}
	if pause > 0 { // before the release, as in attempt
		w.gate.pause(pause)
	}
	if cut {
		done(errNotARequest)
	} else {
		done(result)
	}
	// Logged before any settles: a settlement's broker write is not the
	// vendor's latency.
	for i, it := range items {
		if !unsent(errs[i]) {
			it.d.logAttempt(now, errs[i])
		}
	}
	if !cut && !vendorDown && len(items) > 1 && failedAsWhole(errs) {
		// The request failed as a whole (a timeout, a 5xx) and one item
		// may be the cause: a payload the vendor chokes on. Nobody is
		// charged for a request shared with others; each half is sent
		// again, through the gate, down to the item that fails alone,
		// which is charged and retried or dead-lettered by the policy.
		// The breaker bounds the cost when the vendor itself is down: it
		// hears every failed half, and once open the rest are handed back.
		for i := range items {
			endAttempt(spans[i], Verdict{Action: Retry}, errs[i])
		}
		mid := len(items) / 2
		again, wait, wake = b.send(ctx, items[:mid], inPlace)
		if len(again) > 0 {
			// The first half is to be retried in place: the second,
			// unsent, waits behind it.
			return append(again, items[mid:]...), wait, wake
		}
		return b.send(ctx, items[mid:], inPlace)
	}
	for i, it := range items {
		v := Decide(w.policy, w.unpaused(it.d.history, time.Now()), Attempt{Err: errs[i], VendorDown: vendorDown, CutShort: cut}, time.Now())
		endAttempt(spans[i], v, errs[i])
		if inPlace && v.Action == Retry && ctx.Err() == nil {
			// In place, as an ordered lane's head: the event keeps its
			// history and its place, its key's later events behind it.
			it.d.history.Counted = v.Counted
			status, code := statusCode(errs[i])
			w.obs.Retried(w.name, status)
			w.recordRetrying(it.d, it.ev, errs[i], time.Now().Add(v.Delay))
			if len(again) == 0 {
				w.log.Info("batch delivery failed; retrying in place, later events of its key wait",
					zap.String("event_id", clip(it.ev.ID)), zap.String("sink", w.name), zap.Int("attempt", it.d.history.Attempts),
					zap.Int("status", status), zap.String("code", clip(code)), zap.Duration("delay", v.Delay), zap.Error(errs[i]))
			}
			again = append(again, it)
			wait = max(wait, v.Delay)
			continue
		}
		w.settle(ctx, it.d, it.ev, v, errs[i])
	}
	return again, wait, nil
}

// deliver calls the sink, and reports false if it panicked or returned a
// result count other than one per delivery.
func (b *batcher) deliver(ctx context.Context, ds []*sinks.Delivery) (errs []error, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			b.w.obs.Panicked("deliver-batch")
			b.w.log.Error("panic in a sink's DeliverBatch; delivering its events one by one",
				zap.String("sink", b.w.name), zap.Any("panic", r), zap.ByteString("stack", debug.Stack()))
			errs, ok = nil, false
		}
	}()
	errs = b.sink.DeliverBatch(ctx, ds)
	if len(errs) != len(ds) {
		b.w.log.Error("a sink's DeliverBatch returned a result count unlike its deliveries'; delivering them one by one",
			zap.String("sink", b.w.name), zap.Int("deliveries", len(ds)), zap.Int("results", len(errs)))
		return nil, false
	}
	return errs, true
}

// batchResult is what the gate's breaker and the request metrics hear of
// a batch: success if the vendor accepted or judged any event (it
// answered), else the first event's failure.
func batchResult(errs []error) error {
	for _, err := range errs {
		if err == nil {
			return nil
		}
	}
	for _, err := range errs {
		var se *sinks.Error
		if errors.As(err, &se) && !se.Transient {
			return err
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return errs[0]
}

// failedAsWhole says a batch request failed for every item alike with a
// transient failure that is not throttling: the vendor timed out, reset
// the connection or answered 5xx for the request. A 429 or a Retry-After
// is the account's, never one item's, and is not split.
func failedAsWhole(errs []error) bool {
	for _, err := range errs {
		if err == nil || !retry.IsTransient(err) {
			return false
		}
		var se *sinks.Error
		if errors.As(err, &se) && (se.Status == 429 || se.RetryAfter > 0) {
			return false
		}
	}
	return len(errs) > 0
}

// unsent says no request carried a batch's delivery (sinks.Error.Unsent):
// an earlier request of its batch failed, which ended the sending. It is
// retried as the failure says, and is no attempt: not counted, not logged.
func unsent(err error) bool {
	var se *sinks.Error
	return errors.As(err, &se) && se.Unsent
}
