package dispatch

// The pull loop: what the order group delivers, into the lanes.

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/topology"
)

// feed pulls in the order group and puts each message of this sink into
// its key's lane. It keeps pulling while the gate is shut (the lanes
// wait), since a replica that stops pulling loses the pin while it still
// holds messages. It returns what arrived after ctx ended, unadmitted.
func (o *orderer) feed(ctx, workCtx context.Context, prefetch int) (leftover []jetstream.Msg) {
	for ctx.Err() == nil {
		if why := o.standBy(); why != "" {
			// Another replica's config owns the sink (fence.go), or an
			// operator paused it (operator.go): give up the pin and what
			// is held, in order, for the owner or for whoever is pinned
			// after the resumption, and pull nothing until the sink is
			// this config's again, or resumed. Pulling on would keep the
			// pin here while every message is handed back (fenced), or
			// hold messages for as long as the pause lasts.
			o.loseLease(ctx, why, true)
			o.unpin(ctx)
			if o.w.gate.waitOpen(ctx) != nil {
				return leftover
			}
			continue
		}
		it, err := o.cons.Messages(
			jetstream.PullPriorityGroup(topology.OrderGroup),
			jetstream.PullMaxMessages(prefetch),
			jetstream.PullHeartbeat(orderPull/5),
			jetstream.PullExpiry(orderPull),
			// Missed heartbeats come back from Next (the iterator's
			// default, stated because the lease relies on it: they stop
			// the lanes until the server names this replica's pin again).
			jetstream.WithMessagesErrOnMissingHeartbeat(true),
		)
		if err != nil {
			o.w.log.Warn("pull failed; retrying", zap.String("sink", o.w.name), zap.Error(err))
			if sleep(ctx, time.Second, nil) != nil {
				return leftover
			}
			continue
		}
		stop := context.AfterFunc(ctx, it.Drain)
		var redelivered []originMsg
		// newPin: a message came under a new pin; the lease is asked to
		// prove it once the message is in its lane, so that the count of
		// what this replica holds includes it.
		newPin := false
		admitted := func() {
			if newPin {
				o.kickLease()
				newPin = false
			}
		}
		flush := func() {
			slices.SortFunc(redelivered, func(a, b originMsg) int { return cmp.Compare(a.origin, b.origin) })
			for _, r := range redelivered {
				o.admit(workCtx, r.msg, r.origin, r.stored)
			}
			redelivered = redelivered[:0]
			admitted()
		}
		for {
			var msg jetstream.Msg
			var err error
			if len(redelivered) > 0 {
				msg, err = it.Next(jetstream.NextMaxWait(redeliveryQuiet))
			} else {
				msg, err = next(it) // not left silent (issue 20, consume.go)
			}
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
				flush()
				break
			}
			if err != nil {
				o.w.log.Warn("pull interrupted; continuing", zap.String("sink", o.w.name), zap.Error(err))
				if errors.Is(err, jetstream.ErrNoHeartbeat) {
					o.doubt() // a leader change, a lost server: is the pin still this replica's?
				}
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
			if o.standBy() != "" {
				// Handed back unjudged; the loop above lets the pin go.
				for _, r := range redelivered {
					_ = r.msg.Nak()
				}
				redelivered = redelivered[:0]
				_ = msg.Nak()
				it.Stop()
				break
			}
			if pin := msg.Headers().Get(pinHeader); pin != "" {
				// A new pin: the server gave the pin away and back
				// meanwhile, and another replica may hold earlier
				// messages of this one's keys. Nothing more is started
				// until the lease proves the new pin (order_lease.go);
				// what is held stays, in order.
				newPin = o.sawPin(pin) || newPin
			}
			meta, err := msg.Metadata()
			if err != nil {
				o.admit(workCtx, msg, 0, time.Time{}) // admit terminates it
				continue
			}
			if meta.NumDelivered > 1 {
				// JetStream sends every due redelivery before any new
				// message, but in the order they fell due, which a crash or
				// hand-back can leave out of stream order: gather the run
				// and sort it before it enters the lanes.
				redelivered = append(redelivered, originMsg{msg, topology.Origin(meta.Stream, meta.Sequence.Stream), meta.Timestamp})
				continue
			}
			flush()
			origin := topology.Origin(meta.Stream, meta.Sequence.Stream)
			o.sawNew(origin)
			o.admit(workCtx, msg, origin, meta.Timestamp)
			admitted()
		}
		stop()
	}
	return leftover
}

// originMsg is a message with its origin (topology.Origin: partition and
// sequence; one consumer reads one stream, so origins sort as sequences).
type originMsg struct {
	msg    jetstream.Msg
	origin uint64
	stored time.Time // when its stream stored it
}

// redeliveryQuiet is how long a run of redeliveries may pause before it is
// taken as complete: JetStream sends them back to back, so a pause this
// long is the end of the run, not a pull round trip inside it.
const redeliveryQuiet = 100 * time.Millisecond

// standBy says why the orderer must hold nothing and pull nothing now
// ("" if it may go on).
func (o *orderer) standBy() string {
	switch {
	case o.w.fence.fenced():
		return "another replica's config owns the sink"
	case o.w.gate.heldByOperator():
		return "an operator paused the sink"
	}
	return ""
}
