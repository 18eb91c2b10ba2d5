package dispatch

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// keepAlive tells JetStream every interval that msgs are still being worked
// on, until stopped: one timer, not a goroutine, for a batch (all of its
// messages at once) or a held message; a delivery's one message has
// keepOne, the same from a pool. It is what a message
// in hand needs past the keeper's care (keeper.go: the consumer-wide
// ticker, closed at shutdown) — a delivery in progress, a batch request,
// a decided message whose retry or dead letter cannot be stored yet
// (keepUnsettled). An ordered sink keeps its messages otherwise
// (orderer.keepAlive: in stream order, confirmed by the server).
func keepAlive(every time.Duration, msgs ...jetstream.Msg) (stop func()) {
	var mu sync.Mutex
	stopped := false
	var t *time.Timer
	// Held while the timer is made: its first tick must not read t before
	// it is set.
	mu.Lock()
	defer mu.Unlock()
	t = time.AfterFunc(every, func() {
		for _, m := range msgs {
			_ = m.InProgress()
		}
		mu.Lock()
		defer mu.Unlock()
		if !stopped {
			t.Reset(every)
		}
	})
	return func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		t.Stop()
	}
}

// keepOne is keepAlive for the one message a worker delivers, from the
// sink's pool (alivePool): reused from delivery to delivery, its timer is
// not made per event (keepAlive's timer, mutex and closures were six
// allocations per event). Stop it with release.
type keepOne struct {
	mu      sync.Mutex
	every   time.Duration
	msg     jetstream.Msg
	stopped bool
	t       *time.Timer
}

// alivePool holds stopped keepOnes.
type alivePool struct{ p sync.Pool }

// keep sends an in-progress ack for msg every interval until release.
func (p *alivePool) keep(every time.Duration, msg jetstream.Msg) *keepOne {
	k, _ := p.p.Get().(*keepOne)
	if k == nil {
		k = &keepOne{}
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	k.every, k.msg, k.stopped = every, msg, false
	if k.t == nil {
		k.t = time.AfterFunc(every, k.tick) // under mu: a tick must not read k.t before it is set
	} else {
		k.t.Reset(every)
	}
	return k
}

func (k *keepOne) tick() {
	k.mu.Lock()
	msg, stopped := k.msg, k.stopped
	k.mu.Unlock()
	if stopped {
		return
	}
	_ = msg.InProgress()
	k.mu.Lock()
	defer k.mu.Unlock()
	if !k.stopped {
		k.t.Reset(k.every)
	}
}

// release stops k and returns it to the pool, unless its tick may be
// running: only a timer stopped while pending is known to have no tick
// left (one that ran re-armed it before letting go of mu), and a keepOne
// reused under a running tick would send its in-progress ack for the
// next message, or re-arm the timer for it.
func (p *alivePool) release(k *keepOne) {
	k.mu.Lock()
	k.stopped = true
	k.msg = nil
	pending := k.t.Stop()
	k.mu.Unlock()
	if pending {
		p.p.Put(k)
	}
}
