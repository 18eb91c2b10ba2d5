package dispatch

// The pin lease: whether this replica may still deliver what it holds.

import (
	"context"
	"sync"
	"time"

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
