package dispatch

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// job is one message for a sink's workers; retry says it came from the
// sink's retry consumer.
type job struct {
	msg   jetstream.Msg
	retry bool
	// ticket is the job's place among the sink's jobs, for a keyed
	// batcher, which admits them in that order (batch_keyed.go).
	ticket uint64
}

// consume feeds one durable consumer's messages to a sink's workers with a
// continuous pull: a bounded prefetch (no round trip per batch of idle
// workers), heartbeats so a dead pull is noticed, and no pull at all while
// the sink's gate is shut (breaker open or Retry-After): the prefetched
// messages are handed back at once, so none waits in a client buffer with
// its ack timer running while the vendor is down.
//
// Every message is in a keeper's care from the moment the pull hands it
// over until it is settled, so none outlives ack_wait waiting for a worker,
// a batch or a gate slot (a duplicate with nothing failing). What waits in
// the pull's own buffer, out of the keeper's reach, waits at most a quarter
// of ack_wait: see feed.
//
// A consumer that is gone (deleted, lost with its server) is recreated by
// its healer (heal.go); consume pulls again once it is back.
//
// It returns when ctx is done, after handing back what it had prefetched.
// k, the consumer's keeper, is the caller's to close: what the workers
// hold then (a keyed batcher's groups, delivered within shutdown_grace)
// is still this process's until it is settled (keepers).
func consume(ctx context.Context, c jetstream.Consumer, k *keeper, retry bool, prefetch int, g *gate, jobs chan<- job, log *zap.Logger) {
	h := healerOf(c)
	h.attach(k)
	for ctx.Err() == nil {
		if err := g.waitOpen(ctx); err != nil {
			return
		}
		if err := h.waitUp(ctx); err != nil {
			return
		}
		epoch := k.pullEpoch() // before the pull: its messages are of the instance now, or orphaned
		it, err := c.Messages(
			jetstream.PullMaxMessages(prefetch),
			jetstream.PullHeartbeat(2*time.Second),
			jetstream.PullExpiry(10*time.Second),
		)
		if err != nil {
			log.Warn("pull failed; retrying", zap.Error(err))
			if sleep(ctx, time.Second, nil) != nil {
				return
			}
			continue
		}
		if gone := feed(ctx, it, epoch, retry, g, jobs, k, h, log); gone {
			if h == nil {
				_ = sleep(ctx, time.Second, nil)
			}
			h.suspect()
		}
	}
}

// ackWaitOf is the consumer's ack_wait as the server has it.
func ackWaitOf(c jetstream.Consumer) time.Duration {
	if info := c.CachedInfo(); info != nil && info.Config.AckWait > 0 {
		return info.Config.AckWait
	}
	return 30 * time.Second // JetStream's default
}

// feed hands messages to workers until the gate shuts or ctx is done, then
// drains the iterator, handing back what it had buffered. It also ends the
// pull (taking what it buffered into the keeper's care first) once it has
// waited for workers for a quarter of ack_wait in all: a message in the
// pull's buffer arrived while this pull was open and has waited only while
// feed waited for a worker, so none waits there longer. A sink whose
// workers keep up never waits that long; a saturated one renews its pull
// about every quarter of ack_wait.
//
// gone reports that the pull said the consumer no longer exists.
func feed(ctx context.Context, it jetstream.MessagesContext, epoch uint64, retry bool, g *gate, jobs chan<- job, k *keeper, h *healer, log *zap.Logger) (gone bool) {
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	go func() {
		// Stop pulling when the gate shuts or on shutdown. Drain lets Next
		// return what is buffered, so it can be handed back, not left to
		// time out.
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-watchCtx.Done():
				it.Drain()
				return
			case <-t.C:
				if w, _ := g.shutFor(time.Now()); w > 0 {
					it.Drain()
					return
				}
			}
		}
	}()
	budget := k.every * 3 / 4 // a quarter of ack_wait
	var stalled time.Duration // how long this pull has waited for workers
	handingBack := false      // the gate shut: the rest of the pull goes back
	for {
		msg, err := next(it)
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return false
		}
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			it.Stop()
			return true // the healer logs it, once
		}
		if err != nil {
			// Missed heartbeats, a leader change: the iterator re-pulls by
			// itself; say so and go on. Missed heartbeats are also what a
			// consumer lost without a word looks like: have it looked at.
			log.Warn("pull interrupted; continuing", zap.Error(err))
			if errors.Is(err, jetstream.ErrNoHeartbeat) {
				h.look()
			}
			continue
		}
		if !handingBack && k.epoch.Load() != epoch {
			// The consumer instance this pull began with is gone
			// (keeper.orphanAll), and a pull outlives it when no request
			// of it was waiting to hear so (the server tells only those):
			// what it hands over now may be the old instance's or the new
			// one's. It is all handed back (a nak is safe either way:
			// kept), and a pull of the new instance begins, whose
			// messages are settled again. Kept on, every message of the
			// new instance it delivered went unsettled and came back for
			// ever (TestReviewRev29APullOpenAcrossTheNewInstance-
			// OrphansEverythingItDeliversAfter).
			handingBack = true
			it.Drain()
		}
		m := k.add(msg, stalled, epoch)
		if handingBack {
			_ = m.Nak()
			continue
		}
		if w, _ := g.shutFor(time.Now()); w > 0 || ctx.Err() != nil {
			// Buffered while shutting: hand back, no attempt, and with it
			// all the pull buffered after it, as handOver does. Handed back
			// alone, it came again after a later message that the gate,
			// open again by then, let through: a user's events reached a
			// keyed batch out of order when the breaker flapped
			// (TestRev12RetriesInPlaceDuringABacklogsEndKeepOrder, 2 runs
			// in 5). The server gives the handed-back messages again first,
			// in the order they were handed back.
			handingBack = true
			it.Drain()
			_ = m.Nak()
			continue
		}
		select {
		case jobs <- job{msg: m, retry: retry}:
			continue
		default:
		}
		waitFrom := time.Now()
		t := time.NewTimer(max(budget-stalled, 0))
		select {
		case jobs <- job{msg: m, retry: retry}:
			t.Stop()
			stalled += time.Since(waitFrom)
		case <-ctx.Done():
			t.Stop()
			_ = m.Nak()
		case <-t.C:
			// What the pull buffered may be a quarter of ack_wait old by
			// now: stop it, take the buffer into the keeper's care, hand
			// it over as workers free up, then pull anew.
			it.Drain()
			rest := []*kept{m}
			for {
				msg, err := it.Next()
				if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
					break
				}
				if err == nil {
					rest = append(rest, k.add(msg, budget, epoch))
				}
			}
			handOver(ctx, rest, retry, g, jobs)
			return false
		}
	}
}

// pullRecheck is how long a pull waits for a message before it checks
// again whether it has asked the server for more (next).
const pullRecheck = 100 * time.Millisecond

// next is it.Next, which asks the server for more again after waiting
// pullRecheck for a message. nats.go v1.55's iterator (jetstream/pull.go)
// asks for more only at the top of Next's loop (checkPending), and not
// while its last request is still being published (fetchInProgress, set
// and cleared by pullMessages around pull). On a busy machine the server
// answers that request, and Next hands out everything the pull asked for,
// before the publishing goroutine clears the flag: every check meanwhile
// is skipped, and the Next that finds the buffer empty then waits with no
// request open at the server (no message, no heartbeat) until its
// missed-heartbeat timer (twice the heartbeat, 4 s here) resets the count
// (issue 20: 1 to 4 such 4 s stalls per cmd/bench bulk-metrix run, its
// pulls of 64 drained at once; TestPullDoesNotGoSilentWhileMessagesWait).
// The Next that times out is called again, and its first check asks for
// more. A pull that waits for a good reason (max_ack_pending reached, no
// events) costs one more wake-up per wait; a dead pull is still reported,
// pullRecheck later: the second Next waits with the heartbeat check.
func next(it jetstream.MessagesContext) (jetstream.Msg, error) {
	msg, err := it.Next(jetstream.NextMaxWait(pullRecheck))
	if errors.Is(err, nats.ErrTimeout) {
		return it.Next()
	}
	return msg, err
}

// handOver gives kept messages to the workers, one by one as they free
// up; once the gate shuts or ctx is done the rest are handed back.
func handOver(ctx context.Context, msgs []*kept, retry bool, g *gate, jobs chan<- job) {
	for i, m := range msgs {
		if w, _ := g.shutFor(time.Now()); w > 0 || ctx.Err() != nil {
			for _, m := range msgs[i:] {
				_ = m.Nak()
			}
			return
		}
		select {
		case jobs <- job{msg: m, retry: retry}:
		case <-ctx.Done():
			_ = m.Nak()
		}
	}
}
