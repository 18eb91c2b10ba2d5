package dispatch

// An ordered sink's events stream deleted and made again under it.
//
// A stream made again numbers its events from 1 again, and a consumer made
// again under the same name listens on the same ack subjects: a settlement
// of a message of the deleted stream (an ack, a term, a nak, an
// in-progress ack) reaches the new stream's message at its sequence. The
// keepers' epoch covers the usual path (keeper.go, heal.go's orphanHeld);
// an ordered sink's lanes hold their messages outside the keepers, so the
// orderer tells the two streams apart itself, by when each message was
// stored: everything the new stream holds was stored after it was made
// (its info's Created), everything the deleted one held before.
//
//   - A lane message's settlements go through laneMsg, which sends nothing
//     once the message is found stale: its stream is gone, so nothing is
//     owed to it, and anything sent would settle another event.
//   - Held messages are told apart by sequence and store time (heldKey), so
//     the new stream's event at a held old sequence is not taken for a
//     redelivery of the old one and dropped.
//   - A pin's first proof reads the stream's Created (a stream made again
//     always comes with a new pin: its consumer is new). A held message
//     stored before it, or up to bornSkew after (the server that made the
//     stream and the one that stored a message may disagree on the time),
//     is looked up in the stream at its sequence: if the stream has no
//     message there, or one stored at another time, it is stale, and is
//     taken out of its lane unsettled (dropStaleLocked; an attempt under
//     way goes on, its settlement silenced). The new stream's messages
//     keep their places: one an old ack settled at the server meanwhile is
//     still delivered. One admitted later (an old pull's buffer, a
//     gathered run of redeliveries) is looked up the same way, and dropped
//     if stale.
//
// Without this the new stream's events at the old ones' sequences were
// dropped as held already and the old messages' acks settled them: acked,
// never delivered (TestReviewRev30AnOrderedSinkTakesTheNewStreamsEventsForTheOldOnesAndLosesThem).
//
// What stays open: until that first proof (at most proofEvery after the
// new pin's first message), an attempt of an old message already under
// way can still end in an ack, which settles the new stream's message at
// its sequence; if another replica holds that one, it is lost. A stream is
// made again under running replicas only by an operator's hand
// (docs/operations.md), and within seconds of its deletion.

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/topology"
)

// heldKey names a message an orderer holds: its origin (partition and
// sequence) and when its stream stored it, which tells a deleted stream's
// message from the new stream's at the same sequence. A redelivery of a
// held message has both the same.
type heldKey struct {
	origin uint64
	stored int64 // UnixNano
}

// heldKeyOf is d's heldKey. d came from an events consumer (the lanes
// hold no retry), so received is when its stream stored it.
func heldKeyOf(d *delivery) heldKey {
	return heldKey{d.origin, d.received.UnixNano()}
}

// laneMsg is a message in a lane: its settlements are sent until it is
// found stale, and then nothing is.
type laneMsg struct {
	jetstream.Msg
	stale atomic.Bool
}

func (m *laneMsg) isStale() bool { return m.stale.Load() }

func (m *laneMsg) Ack() error {
	if m.isStale() {
		return nil
	}
	return m.Msg.Ack()
}

func (m *laneMsg) DoubleAck(ctx context.Context) error {
	if m.isStale() {
		return nil
	}
	return m.Msg.DoubleAck(ctx)
}

func (m *laneMsg) Nak() error {
	if m.isStale() {
		return nil
	}
	return m.Msg.Nak()
}

func (m *laneMsg) NakWithDelay(d time.Duration) error {
	if m.isStale() {
		return nil
	}
	return m.Msg.NakWithDelay(d)
}

func (m *laneMsg) Term() error {
	if m.isStale() {
		return nil
	}
	return m.Msg.Term()
}

func (m *laneMsg) TermWithReason(reason string) error {
	if m.isStale() {
		return nil
	}
	return m.Msg.TermWithReason(reason)
}

func (m *laneMsg) InProgress() error {
	if m.isStale() {
		return nil
	}
	return m.Msg.InProgress()
}

// dropStaleLocked takes the held messages named in stale out of their
// lanes, their settlements silenced, and reports how many. A lane whose
// head is in a step goes on with its next message when the step ends
// (pop); the lanes keep the new stream's messages in their places, so one
// an old ack settled at the server in the meantime is still delivered.
func (o *orderer) dropStaleLocked(stale map[heldKey]bool) (n int) {
	for l := range o.all {
		for i := 0; i < len(l.q); {
			d := l.q[i]
			if !stale[heldKeyOf(d)] {
				i++
				continue
			}
			markStale(d)
			delete(o.origins, heldKeyOf(d))
			l.q, l.evs, l.tgs = slices.Delete(l.q, i, i+1), slices.Delete(l.evs, i, i+1), slices.Delete(l.tgs, i, i+1)
			n++
		}
		if len(l.q) == 0 {
			delete(o.all, l)
			if l.key != "" && o.lanes[l.key] == l {
				delete(o.lanes, l.key)
			}
			o.ready = slices.DeleteFunc(o.ready, func(r *lane) bool { return r == l })
		}
	}
	return n
}

// markStale has d's settlements sent no more: its stream is gone.
func markStale(d *delivery) {
	if m, ok := d.msg.(*laneMsg); ok {
		m.stale.Store(true)
	}
}

// suspectsLocked lists the held messages suspectLocked names.
func (o *orderer) suspectsLocked() []heldKey {
	var out []heldKey
	for k := range o.origins {
		if o.suspectLocked(time.Unix(0, k.stored)) {
			out = append(out, k)
		}
	}
	return out
}

// bornSkew is how far the clocks of a cluster's servers may disagree: a
// message stored up to this long after its stream was made (by another
// server's clock) is looked up before it is taken for the stream's own.
const bornSkew = 2 * time.Second

// suspectLocked says whether a message stored at stored may be a deleted
// stream's, and must be looked up (staleIn) to tell.
func (o *orderer) suspectLocked(stored time.Time) bool {
	return !o.born.IsZero() && stored.Before(o.born.Add(bornSkew))
}

// staleIn says whether the message at origin, stored at stored, is not
// events' own: events has no message at its sequence, or one stored at
// another time.
func staleIn(ctx context.Context, events jetstream.Stream, origin uint64, stored time.Time) (bool, error) {
	_, seq := topology.SplitOrigin(origin)
	m, err := events.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return !m.Time.Equal(stored), nil
}
