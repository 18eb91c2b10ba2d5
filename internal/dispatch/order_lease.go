package dispatch

// The pin lease: whether this replica may still deliver what it holds.
//
// The pin is proven, not assumed. JetStream gives a pinned priority
// group's messages to one client at a time, but it moves the pin without
// telling the old holder: a consumer leader change (topology.SpreadLeaders
// steps leaders down at every start with partitions), a server restart
// and an operator's unpin all forget it, and the next pull without a pin
// id is given a new one. nats.go's iterator swallows what the old holder
// could notice (a 423 Nats-Wrong-Pin-Id or a 409 leadership change): it
// only forgets its pin id and pulls again. The old holder's in-progress
// acks keep working whatever the pin, so it keeps its messages for as
// long as it likes, while the new holder is given the newer events of the
// same keys. Hence two proofs, both from the server:
//
//   - Holding: a replica starts an attempt only while the server has
//     lately named its pin (the consumer's info, asked every proofEvery:
//     PinnedClientID equals the Nats-Pin-Id its messages came under) and
//     its held messages were lately kept alive (orderLease). A pin it did
//     not have before (a new Nats-Pin-Id), or missed heartbeats, stop its
//     lanes until the server names the pin again; the server naming
//     another pin, or none, drops them at once and hands them back
//     (loseLease).
//   - Exclusive: the first proof of a pin also needs the consumer's
//     NumAckPending to be no more than what this replica holds: nothing
//     delivered before is still held by another replica, kept alive or
//     falling due. Until then the new holder only gathers: the old
//     holder's messages come to it (handed back, or due), are put into
//     their lanes in stream order, ahead of the newer ones, and only then
//     does it deliver.
//   - Caught up: counts are not sets. JetStream takes an ack by stream
//     sequence, whoever holds the message now, so the old holder's late
//     ack of a message it let go (and the new holder holds again) counts
//     it out of num_ack_pending while the new holder still counts it
//     held: the counts agree with a message still pending elsewhere. One
//     delivered to the old holder and never received (an R3 consumer's
//     delivery queued at a leader step-down is dropped, while its entry
//     still commits) is pending for ack_wait and comes back to no one
//     but the new holder after it; meanwhile the new holder would deliver
//     the key's later events. So the first proof also notes the last
//     message delivered then (Delivered.Stream: whatever the old holder
//     had is at or below it), and until the ack floor reaches it (every
//     message up to it settled, by anyone), or ack_wait has passed since
//     it first saw the pin and the counts still agree (whatever was
//     delivered before has fallen due and come here), only lanes whose
//     head is at or below it are worked: the old holder's messages, which
//     come here, settle and move the floor; newer messages wait
//     (startsInCatchUp, caughtUp).
//
// So two replicas can never both deliver a key: the new holder starts
// once the old one holds nothing. What the old holder had under way when
// it let go cannot be recalled; the hand-back bounds it: the attempts are
// cancelled and waited for before anything is handed back, and the
// hand-back makes the messages due handOverGap later, so the new holder
// gets the key's head no sooner than that after the old holder's last
// request for it was abandoned. A holder that cannot reach the server at
// all stops within orderLease and its messages fall due after ack_wait, a
// quarter of it later at the least.

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/topology"
)

// unpin lets the next replica take over at once instead of after the
// pinned TTL: everything this one held is handed back, in order. Only the
// pinned replica may: unpinning another would let a third take messages
// while that one still holds earlier ones of the same keys.
func (o *orderer) unpin(ctx context.Context) {
	o.mu.Lock()
	pin := o.pinID
	if o.proved != pin {
		pin = "" // lost, or never proven: not this replica's to release
	}
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
	if pinnedID(info) == pin {
		if s, err := o.w.js.Stream(uctx, info.Stream); err == nil {
			_ = s.UnpinConsumer(uctx, info.Name, topology.OrderGroup)
		}
	}
}

// pinnedID is the pin the server gives the order group now ("" for none).
func pinnedID(info *jetstream.ConsumerInfo) string {
	for _, g := range info.PriorityGroups {
		if g.Group == topology.OrderGroup {
			return g.PinnedClientID
		}
	}
	return ""
}

// orderLease is how long an ordered replica keeps starting attempts after
// the server last named its pin, and after its held messages were last
// kept alive. None of them is due for redelivery (ack_wait) before it
// stops: a quarter of ack_wait is the margin for an attempt already on
// its way. In-progress acks go out every ack_wait/3, so one late answer
// is not a loss.
func orderLease(ackWait time.Duration) time.Duration { return ackWait * 3 / 4 }

// proofEvery is how often a replica asks the server whose the pin is: how
// long a replica that lost the pin can go on holding its keys' heads, and
// so how long the new holder waits for them (besides handOverGap).
func proofEvery(ackWait time.Duration) time.Duration { return min(ackWait/4, time.Second) }

// handOverGap is how long a message handed back on losing the pin waits
// before it is due again: the time the request of an attempt abandoned at
// that moment has to reach the vendor (or not) before the new holder can
// try the same head and then the next event of its key.
const handOverGap = time.Second

// fenceRetry is how soon a new holder asks again while messages delivered
// before are pending elsewhere or on their way to it; it doubles with each
// answer that finds them still pending, up to proofEvery (a dead holder's
// messages take ack_wait to fall due).
const fenceRetry = 25 * time.Millisecond

// startsInCatchUp says whether a lane whose head is head may be worked in
// a new pin's catch-up up to catchTo (0: none). The old holder's messages
// (at or below it) may: they come here, and their settling moves the ack
// floor. A newer one waits: a message of its key delivered before the pin
// moved may still be pending elsewhere. An unkeyed lane is not ordered.
func startsInCatchUp(catchTo uint64, key string, head uint64) bool {
	return catchTo == 0 || key == "" || head <= catchTo
}

// caughtUp says whether a new pin's catch-up to catchTo is over, from an
// answer asked elapsed after the pin was first seen here: the ack floor has
// reached catchTo, or nothing is pending (everything delivered before the
// pin moved is settled, by anyone); or catchUpPatience has passed and the
// counts agree (counted: num_ack_pending no more than what is held,
// nothing settled while asked), so whatever an old holder had has fallen
// due, and what is pending is here. A count alone is not enough before
// then: a late ack of a message held here makes up for one still out.
func caughtUp(catchTo, floor uint64, pending int, counted bool, elapsed, ackWait time.Duration) bool {
	return floor >= catchTo || pending == 0 || (elapsed >= catchUpPatience(ackWait) && counted)
}

// catchUpPatience is how long after a new holder first saw the pin a
// message an old Chapar holder had may still be out: that holder keeps
// what it holds alive (in-progress acks, keepAlive's tick about a quarter
// of ack_wait apart) for up to orderLease after its last answered pin
// check, which came before the move; the message then falls due ack_wait
// after its last in-progress ack, or handOverGap after a hand-back; one
// proofEvery more for replies that come late (review rev25: stacked worst
// cases overran the sum by up to ack_wait/12). About 2.25 × ack_wait +
// 1 s. Ending the catch-up on ack_wait alone let a key's
// later event overtake a message kept alive that long
// (TestReviewRev24KeptAliveOnlyAsLongAsAChaparOldHolderCanStillOvertaken).
// A holder that is not Chapar and keeps a message alive longer is not
// bounded so.
func catchUpPatience(ackWait time.Duration) time.Duration {
	return ackWait + orderLease(ackWait) + ackWait/4 + proofEvery(ackWait) + handOverGap
}

// mayLocked says whether the lanes may start attempts now.
func (o *orderer) mayLocked(now time.Time) bool {
	bound := orderLease(o.w.ackWait)
	return o.pinID != "" && o.proved == o.pinID && now.Sub(o.provedAt) < bound && now.Sub(o.kept) < bound
}

// sawPin notes the pin a message came under. A pin this replica did not
// have stops its lanes until the server names it; moved says to ask the
// server now (kickLease), once the message is in its lane.
func (o *orderer) sawPin(pin string) (moved bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	moved = pin != o.pinID
	o.pinID = pin
	if moved {
		o.fenced, o.firstNew, o.pinSeen = 0, 0, time.Now()
	}
	return moved
}

// sawNew notes a message delivered for the first time, under the pin
// sawPin noted last: JetStream delivers a message the first time in
// stream order, so the first one under a pin bounds what went to any
// holder before it.
func (o *orderer) sawNew(origin uint64) {
	o.mu.Lock()
	if o.firstNew == 0 || origin < o.firstNew {
		o.firstNew = origin
	}
	o.mu.Unlock()
}

// catchUpToLocked is the newest message a lane's head may be in the
// current catch-up (0: none, any may): the older of the last delivered at
// the first proof and the one before the first delivered here under the
// pin, which may have come before the proof, or be on its way after it.
func (o *orderer) catchUpToLocked() uint64 {
	return catchUpTo(o.catchTo, o.firstNew)
}

// catchUpTo is catchUpToLocked's choice: 0 while no catch-up runs.
func catchUpTo(catchTo, firstNew uint64) uint64 {
	if catchTo == 0 || firstNew == 0 || firstNew-1 >= catchTo {
		return catchTo
	}
	return firstNew - 1 // 0 for the stream's first message: nothing was before it
}

// doubt stops the lanes until the server names this replica's pin again
// (its pull went unanswered: a leader change, a lost server).
func (o *orderer) doubt() {
	o.mu.Lock()
	o.provedAt = time.Time{}
	o.mu.Unlock()
	o.kickLease()
}

func (o *orderer) kickLease() {
	select {
	case o.kick <- struct{}{}:
	default:
	}
}

// lease keeps the held messages alive and the pin proven until stopped:
// every proofEvery (or when kicked) it asks the server whose the pin is,
// every ack_wait/3 it sends in-progress acks for what is held, and it
// drops the lanes once they could not be kept alive, or the server has
// not said whose the pin is, for orderLease: a replica that cannot prove
// the pin must not keep what it holds alive for ever, or a new holder
// would wait for it for ever.
func (o *orderer) lease(ctx context.Context) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		every := proofEvery(o.w.ackWait)
		t := time.NewTicker(every)
		defer t.Stop()
		var keptAt time.Time
		answered := time.Now()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			case <-o.kick:
			}
			if now := time.Now(); now.Sub(keptAt) >= o.w.ackWait/3 || o.holdsNothing() {
				keptAt = now
				o.keepAlive(ctx, o.w.ackWait/3)
			}
			if o.keptTooLong(time.Now()) {
				// Unsettled: JetStream redelivers them once due, to
				// whoever proves the pin then.
				o.loseLease(ctx, "the held messages could not be kept alive for "+orderLease(o.w.ackWait).String(), false)
				continue
			}
			if o.prove(ctx, every) {
				answered = time.Now()
			} else if time.Since(answered) > orderLease(o.w.ackWait) && !o.holdsNothing() {
				o.loseLease(ctx, "the server has not said whose the pin is for "+orderLease(o.w.ackWait).String(), true)
				answered = time.Now()
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (o *orderer) holdsNothing() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.all) == 0
}

func (o *orderer) keptTooLong(now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.all) > 0 && now.Sub(o.kept) > orderLease(o.w.ackWait)
}

// keepAlive sends in-progress acks for every held message (waiting or in
// flight), all at once and in stream order: their ack deadlines then
// follow stream order, so if this replica dies they fall due, and are
// redelivered, in stream order too. A per-message timer would not keep
// that. The last one is a request: JetStream's answer says it had all of
// them (a connection's acks are taken in order), and sets kept to when
// they were sent. Holding nothing, there is nothing to keep: the messages
// admitted later were delivered after now.
func (o *orderer) keepAlive(ctx context.Context, timeout time.Duration) {
	sent := time.Now()
	msgs := o.held()
	if len(msgs) > 0 {
		for _, m := range msgs[:len(msgs)-1] {
			_ = m.InProgress()
		}
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		_, err := o.w.js.Conn().RequestWithContext(rctx, msgs[len(msgs)-1].Reply(), []byte("+WPI"))
		cancel()
		if err != nil {
			return
		}
	}
	o.mu.Lock()
	if sent.After(o.kept) {
		o.kept = sent
	}
	o.mu.Unlock()
}

// prove asks the server whose the pin is. Its answer proves the lease
// from when it was asked if it names this replica's pin and, the first
// time for that pin, says nothing delivered is pending but what this
// replica holds. Naming another pin, or none, it loses the lease and
// hands back what it held. No answer proves nothing: the lease runs out.
// It reports whether the server answered (or nothing was to be asked).
func (o *orderer) prove(ctx context.Context, timeout time.Duration) (answered bool) {
	o.mu.Lock()
	pin, held, pops := o.pinID, len(o.origins), o.pops
	o.mu.Unlock()
	if pin == "" {
		return true // never given a message: nothing held, nothing to prove
	}
	asked := time.Now()
	rctx, cancel := context.WithTimeout(ctx, timeout)
	info, err := o.cons.Info(rctx)
	cancel()
	if err != nil {
		return false
	}
	got := pinnedID(info)
	o.mu.Lock()
	if o.pinID != pin {
		o.mu.Unlock()
		return true // a message under a newer pin came meanwhile: ask again
	}
	if got == pin {
		first := o.proved != pin
		// Counted before the question, so a message given to this
		// replica since is not taken for one held elsewhere; a message
		// settled meanwhile would be, so then the count is taken again.
		if first && (info.NumAckPending > held || o.pops != pops) {
			wait := min(fenceRetry<<min(o.fenced, 10), proofEvery(o.w.ackWait))
			o.fenced++
			o.mu.Unlock()
			// Soon again, not in proofEvery: what is pending is mostly
			// on its way to this replica (a start, a hand-back's gap).
			time.AfterFunc(wait, o.kickLease)
			o.w.log.Debug("pinned, waiting for messages another replica held", zap.String("sink", o.w.name),
				zap.Int("pending", info.NumAckPending), zap.Int("held", held))
			return true
		}
		if first {
			// Everything delivered before the pin moved is at or below
			// Delivered.Stream; while any of it is unsettled, the counts
			// alone do not say who has it.
			o.catchTo, o.catchFrom, o.catchAsks = 0, time.Time{}, 0
			if info.NumAckPending > 0 && info.AckFloor.Stream < info.Delivered.Stream {
				// ack_wait counts from when this replica saw the pin
				// first: it had moved by then, so whatever went before
				// and is not kept alive falls due by then plus ack_wait.
				o.catchTo, o.catchFrom = topology.Origin(info.Stream, info.Delivered.Stream), o.pinSeen
				if o.catchFrom.IsZero() {
					o.catchFrom = asked
				}
			}
		}
		if o.catchTo != 0 {
			floor := topology.Origin(info.Stream, info.AckFloor.Stream)
			counted := info.NumAckPending <= held && o.pops == pops
			if caughtUp(o.catchUpToLocked(), floor, info.NumAckPending, counted, asked.Sub(o.catchFrom), o.w.ackWait) {
				o.catchTo, o.catchFrom = 0, time.Time{}
				o.w.log.Debug("caught up with what was delivered before the pin moved", zap.String("sink", o.w.name))
			}
		}
		o.proved, o.provedAt, o.fenced = pin, asked, 0
		if o.catchTo != 0 {
			// Soon again, as for the count: the floor moves as the old
			// holder's messages settle here (pop kicks the lease too,
			// but its ack may not be in by the answer). One timer, or
			// every answer would start another round of asking.
			wait := min(fenceRetry<<min(o.catchAsks, 10), proofEvery(o.w.ackWait))
			o.catchAsks++
			if o.catchKick == nil {
				o.catchKick = time.AfterFunc(wait, o.kickLease)
			} else {
				o.catchKick.Reset(wait)
			}
		}
		if len(o.ready) > 0 {
			select {
			case o.signal <- struct{}{}:
			default:
			}
		}
		o.mu.Unlock()
		if first {
			o.w.log.Debug("proved the ordered consumer's pin", zap.String("sink", o.w.name), zap.Int("held", held))
		}
		return true
	}
	o.mu.Unlock()
	why := "the server pins no replica"
	if got != "" {
		why = "the server pins another replica"
	}
	o.loseLease(ctx, why, true)
	return true
}

// loseLease drops every lane, cancels the attempts under way and forgets
// the proof: the next one must find nothing held elsewhere. With
// handBack (the server answered, naming another pin or none) it waits for
// the cancelled steps, then hands the messages back in stream order,
// due handOverGap later, so whoever is pinned gets them at once and in
// order. Without (the server cannot be reached) it settles nothing:
// JetStream redelivers them once due. It reports whether anything was
// dropped; holding nothing, there is nothing to lose.
func (o *orderer) loseLease(ctx context.Context, why string, handBack bool) bool {
	o.mu.Lock()
	o.proved, o.provedAt = "", time.Time{}
	o.catchTo, o.catchFrom = 0, time.Time{}
	if len(o.all) == 0 {
		o.mu.Unlock()
		return false
	}
	var ds []*delivery
	for l := range o.all {
		l.gone = true
		ds = append(ds, l.q...)
	}
	clear(o.all)
	clear(o.lanes)
	clear(o.origins)
	o.ready = nil
	o.endEpoch()
	flight := o.flight
	o.epoch, o.endEpoch = context.WithCancel(o.work)
	o.flight = &sync.WaitGroup{}
	o.mu.Unlock()
	o.w.log.Warn("lost the ordered consumer's pin; dropped what this replica held, for the pinned replica to deliver in order",
		zap.String("sink", o.w.name), zap.String("why", why), zap.Int("dropped", len(ds)), zap.Bool("handed_back", handBack))
	if !handBack {
		return true
	}
	// The attempts were cancelled; once they have returned, nothing of
	// this replica's is on its way to the vendor but bytes already sent.
	waited := make(chan struct{})
	go func() { flight.Wait(); close(waited) }()
	select {
	case <-waited:
	case <-time.After(o.w.ackWait / 4):
		// Not for longer: this loop keeps alive what the replica holds
		// meanwhile. A step still running is stuck past its context;
		// the gap covers it, or nothing does.
		o.w.log.Warn("a cancelled attempt has not returned; handing back anyway", zap.String("sink", o.w.name))
	case <-ctx.Done():
	}
	slices.SortFunc(ds, func(a, b *delivery) int { return cmp.Compare(a.origin, b.origin) })
	for _, d := range ds {
		_ = d.msg.NakWithDelay(handOverGap)
	}
	return true
}
