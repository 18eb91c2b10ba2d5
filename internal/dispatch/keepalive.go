package dispatch

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// keepAlive tells JetStream every interval that msgs are still being worked
// on, until stopped: one timer, not a goroutine, for a delivery (one
// message) or a batch (all of its messages at once). It is what a message
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
