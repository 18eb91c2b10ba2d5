package dispatch

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// job is one message for a sink's workers; retry says it came from the
// sink's retry consumer.
type job struct {
	msg   jetstream.Msg
	retry bool
}

// consume feeds one durable consumer's messages to a sink's workers with a
// continuous pull: a bounded prefetch (no round trip per batch of idle
// workers), heartbeats so a dead pull is noticed, and no pull at all while
// the sink's gate is shut (breaker open or Retry-After): the prefetched
// messages are handed back at once, so none waits in a client buffer with
// its ack timer running while the vendor is down.
//
// It returns when ctx is done, after handing back what it had prefetched.
func consume(ctx context.Context, c jetstream.Consumer, retry bool, prefetch int, g *gate, jobs chan<- job, log *zap.Logger) {
	for ctx.Err() == nil {
		if err := g.waitOpen(ctx); err != nil {
			return
		}
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
		feed(ctx, it, retry, g, jobs, log)
	}
}

// feed hands messages to workers until the gate shuts or ctx is done, then
// drains the iterator, handing back what it had buffered.
func feed(ctx context.Context, it jetstream.MessagesContext, retry bool, g *gate, jobs chan<- job, log *zap.Logger) {
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
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return
		}
		if err != nil {
			// Missed heartbeats, a leader change, a deleted consumer: the
			// iterator re-pulls by itself; say so and go on.
			log.Warn("pull interrupted; continuing", zap.Error(err))
			if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
				it.Stop()
				_ = sleep(ctx, time.Second, nil)
				return
			}
			continue
		}
		if w, _ := g.shutFor(time.Now()); w > 0 || ctx.Err() != nil {
			_ = msg.Nak() // buffered while shutting: hand back, no attempt
			continue
		}
		select {
		case jobs <- job{msg: msg, retry: retry}:
		case <-ctx.Done():
			_ = msg.Nak()
		}
	}
}
