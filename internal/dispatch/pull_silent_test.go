package dispatch

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/chapar-dev/chapar/internal/retry"
)

// Issue 20: a pull must not go silent while messages wait. nats.go's
// iterator asks for more only inside Next, and skips the ask while its
// previous request is still being published; a Next that drains the
// buffer in that window then waits with nothing requested, until the
// missed-heartbeat error (twice the heartbeat, 4 s) resets the count. A
// small prefetch and workers that take every message at once give the
// window many chances: 40,000 messages in pulls of 4 (a request every two
// or so), every one handed over with no pull interrupted. Before the fix
// (consume.go next): 2 to 4 interrupted, 3 runs of 3, under -race.
func TestPullDoesNotGoSilentWhileMessagesWait(t *testing.T) {
	const n = 40000
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := newAckWaitConsumer(ctx, t, "PS", "ps", 30*time.Second)
	for range n {
		if _, err := a.js.PublishAsync("ps", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-a.js.PublishAsyncComplete():
	case <-ctx.Done():
		t.Fatal("publishing did not complete")
	}
	core, logs := observer.New(zap.WarnLevel)
	log := zap.New(core)
	k := newKeeper(30 * time.Second)
	defer k.close()
	g := newGate("ps", retry.BreakerSettings{FailureThreshold: 5, OpenTimeout: time.Second, Interval: time.Minute}, 1, log, nil)
	jobs := make(chan job)
	var got atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for j := range jobs {
			_ = j.msg.Ack()
			if got.Add(1) == n {
				cancel()
			}
		}
	}()
	pullCtx, stopPull := context.WithCancel(ctx)
	defer stopPull()
	start := time.Now()
	consume(pullCtx, a.c, k, false, 4, g, jobs, log)
	close(jobs)
	<-done
	t.Logf("%d of %d messages in %s", got.Load(), n, time.Since(start).Round(time.Millisecond))
	silent := 0
	for _, l := range logs.All() {
		if strings.Contains(l.Message, "pull interrupted") {
			silent++
			t.Logf("%s %s %v", l.Time.Format("15:04:05.000"), l.Message, l.ContextMap())
		}
	}
	if got.Load() < n {
		t.Errorf("%d of %d messages handed over", got.Load(), n)
	}
	if silent > 0 {
		t.Errorf("%d pulls went silent and were interrupted", silent)
	}
}
