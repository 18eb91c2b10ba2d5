package dispatch

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/topology"
)

// Issue 9.14: when a Retry-After pause ends, the sink resumes with one
// request, then doubles with each success: no thundering herd.
func TestGateResumesWithOneRequestThenRamps(t *testing.T) {
	g := newGate("s", retry.BreakerSettings{FailureThreshold: 100, OpenTimeout: time.Second}, 8, zap.NewNop(), nil)
	g.pause(100 * time.Millisecond)
	if w, _ := g.shutFor(time.Now()); w <= 0 {
		t.Fatal("not shut during the pause")
	}
	var inFlight, peak atomic.Int32
	var mu sync.Mutex
	var peaks []int32 // peak in flight at each release
	var wg sync.WaitGroup
	release := make(chan struct{})
	for range 8 {
		wg.Go(func() {
			for {
				done, _, err := g.acquire(context.Background())
				var shut errShut
				if errors.As(err, &shut) {
					continue // a real worker hands back; here, ask again
				}
				if err != nil {
					t.Error(err)
					return
				}
				n := inFlight.Add(1)
				for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
				}
				<-release
				mu.Lock()
				peaks = append(peaks, peak.Load())
				mu.Unlock()
				inFlight.Add(-1)
				done(nil)
				return
			}
		})
	}
	// Release one request at a time, each after the gate had its chance to
	// let more through.
	for range 8 {
		deadline := time.Now().Add(5 * time.Second)
		for inFlight.Load() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("no request let through")
			}
			time.Sleep(time.Millisecond)
		}
		release <- struct{}{}
	}
	wg.Wait()
	if peaks[0] != 1 {
		t.Errorf("%d requests in flight right after the pause, want 1 (peaks %v)", peaks[0], peaks)
	}
}

// A 429 never trips the breaker: the pause handles throttling.
func TestGateThrottlingDoesNotOpenTheBreaker(t *testing.T) {
	g := newGate("s", retry.BreakerSettings{FailureThreshold: 2, OpenTimeout: time.Minute}, 4, zap.NewNop(), nil)
	for range 5 {
		done, _, err := g.acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		done(&sinks.Error{Reason: outcome.RetriesExhausted, Transient: true, Status: 429})
	}
	if st := g.State(); st != retry.State(0) {
		t.Errorf("breaker %s after five 429s", st)
	}
	for range 2 {
		done, _, err := g.acquire(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		done(&sinks.Error{Reason: outcome.RetriesExhausted, Transient: true, Status: 503})
	}
	if _, _, err := g.acquire(context.Background()); !errors.As(err, new(errShut)) {
		t.Errorf("acquire with the breaker open: %v, want errShut", err)
	}
}

// Issue 9.13: start-up waits out what a forming cluster answers, and gives
// up on what waiting cannot fix.
func TestRetryableStartupErrors(t *testing.T) {
	cases := []struct {
		err   error
		retry bool
	}{
		{context.DeadlineExceeded, true},
		{fmt.Errorf("topology: stream X: %w", context.DeadlineExceeded), true},
		{nats.ErrNoResponders, true},
		{nats.ErrTimeout, true},
		{&jetstream.APIError{Code: 503, ErrorCode: 10008, Description: "JetStream system temporarily unavailable"}, true},
		{&jetstream.APIError{Code: 500, Description: "insufficient resources"}, true},
		// A stream config the server refuses (JSStreamInvalidConfigF, a
		// 500): waiting does not fix it; before, the start waited for ever.
		{fmt.Errorf("topology: stream CHAPAR_EVENTS: %w", &jetstream.APIError{Code: 500, ErrorCode: 10052, Description: "duplicates window can not be larger then max age"}), false},
		{&jetstream.APIError{Code: 400, ErrorCode: 10058, Description: "stream name already in use with a different configuration"}, false},
		{&jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement, peer offline"}, true},
		{&jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "insufficient resources"}, false},
		{fmt.Errorf("topology: look up events stream CHAPAR_EVENTS: %w", jetstream.ErrStreamNotFound), true},
		{fmt.Errorf("topology: consumer sink-gw on CHAPAR_EVENTS: %w", topology.ErrConsumerGone), true},
		{errors.New("config: bad"), false},
	}
	for _, c := range cases {
		var perm *backoff.PermanentError
		if got := !errors.As(retryable(c.err), &perm); got != c.retry {
			t.Errorf("retryable(%v) = %v, want %v", c.err, got, c.retry)
		}
	}
	// Early in a bind, any refused placement is a cluster still forming;
	// past formingGrace only the ones waiting fixes are.
	noPeers := &jetstream.APIError{Code: 400, ErrorCode: 10005, Description: "no suitable peers for placement"}
	var perm *backoff.PermanentError
	if errors.As(retryableSince(noPeers, time.Second), &perm) {
		t.Error("a refused placement a second into the bind is permanent; want waited out")
	}
	if !errors.As(retryableSince(noPeers, 2*formingGrace), &perm) {
		t.Error("a refused placement past formingGrace is retried; want permanent")
	}
}

// A sink's prefetch: four messages per worker up to 512, then two per
// worker, at most 4,096; and at least 512, or half the sink's
// max_ack_pending if that is less. Past 128 workers four per worker held
// more than the pull needs to stay ahead of them: at 256 workers
// (cmd/bench slow) 1,024 messages were 0.4 MiB of the live heap, about
// 1 MiB of peak RSS with the GC's headroom, and 512 leave 256 queued when
// the pull asks for more (issue 20). Below 128 workers, 512 ahead: fewer
// pull requests for the server (docs/design.md, "Pulling").
func TestPrefetch(t *testing.T) {
	for _, c := range []struct{ workers, maxAckPending, want int }{
		{1, 1000, 500}, {16, 1000, 500}, {64, 1000, 500}, {128, 1000, 512}, {256, 1000, 512},
		{512, 1000, 1024}, {1024, 10000, 2048}, {4096, 100000, 4096},
		{1, 20000, 512}, {16, 20000, 512}, // at most 512 ahead of few workers
		{1, 10, 32}, {16, 100, 64}, // a small max_ack_pending: four per worker, at least 32
	} {
		if got := prefetch(c.workers, c.maxAckPending); got != c.want {
			t.Errorf("prefetch(%d workers, max_ack_pending %d) = %d; want %d", c.workers, c.maxAckPending, got, c.want)
		}
	}
}

// An operator's pause that takes hold while a request waits out the
// sink's pace (after the gate found it open) must still stop that
// request: the slot is taken after the wait, and a request that leaves
// then reaches the vendor after the pause (the window the pause tests'
// Tally.Sending wait does not close: it counts from the slot on).
func TestGatePauseDuringThePaceWaitStopsTheRequest(t *testing.T) {
	g := newGate("s", retry.BreakerSettings{FailureThreshold: 100, OpenTimeout: time.Second}, 8, zap.NewNop(), nil)
	g.pace = newPacer(&config.RateLimit{PerSecond: 4, Burst: 1}, nil)
	done, _, err := g.acquire(context.Background()) // the burst's one token
	if err != nil {
		t.Fatal(err)
	}
	defer done(nil)
	type result struct {
		done func(error)
		err  error
	}
	second := make(chan result, 1)
	go func() {
		d, _, err := g.acquire(context.Background()) // waits ~250 ms for its token
		second <- result{d, err}
	}()
	for deadline := time.Now().Add(5 * time.Second); g.pace.limiter.Tokens() > -0.5; { // the second request waiting for its token
		if time.Now().After(deadline) {
			t.Fatal("the second request never reserved its token")
		}
		time.Sleep(time.Millisecond) // a poll on the condition
	}
	g.setHeld(true, time.Now())
	r := <-second
	if r.err == nil {
		r.done(nil)
		t.Error("the gate gave a slot to a request after the operator's pause took hold")
	}
}

// A half-open breaker's probe that the gate's second look refuses (an
// operator's pause during the pace's wait) is not a request: after the
// resumption the breaker gives out its probe again, and the count of
// requests in flight is back at 0 (found by review: no wedge).
func TestGateProbeRefusedByAPauseDuringItsPaceWaitIsGivenOutAgain(t *testing.T) {
	var inflight int
	g := newGate("s", retry.BreakerSettings{FailureThreshold: 1, OpenTimeout: 200 * time.Millisecond}, 8, zap.NewNop(), nil)
	g.sending = func(d int) { inflight += d }
	done, _, err := g.acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	done(&sinks.Error{Status: 503, Transient: true}) // opens
	if g.cb.State().String() != "open" {
		t.Fatalf("state %s", g.cb.State())
	}
	for deadline := time.Now().Add(5 * time.Second); g.cb.State().String() != "half-open"; { // the open timeout passing
		if time.Now().After(deadline) {
			t.Fatalf("state %s 5 s after opening with a 200 ms timeout", g.cb.State())
		}
		time.Sleep(5 * time.Millisecond) // a poll on the condition
	}
	g.pace = newPacer(&config.RateLimit{PerSecond: 4, Burst: 1}, nil)
	g.pace.reserve() // take the burst token so the probe waits ~250ms
	res := make(chan error, 1)
	go func() {
		d, _, err := g.acquire(context.Background())
		if err == nil {
			d(nil)
		}
		res <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); g.pace.limiter.Tokens() > -0.5; {
		if time.Now().After(deadline) {
			t.Fatal("the probe never reserved its token")
		}
		time.Sleep(time.Millisecond)
	}
	g.setHeld(true, time.Now())
	err = <-res
	var shut errShut
	if !errors.As(err, &shut) {
		t.Fatalf("want errShut, got %v", err)
	}
	t.Logf("refused: %v; breaker %s, inflight %d", err, g.cb.State(), inflight)
	g.setHeld(false, time.Now())
	d, probe, err := g.acquire(context.Background())
	if err != nil {
		t.Fatalf("after resume: %v (breaker %s) — wedged", err, g.cb.State())
	}
	if !probe {
		t.Error("not the probe")
	}
	d(nil)
	if g.cb.State().String() != "closed" || inflight != 0 {
		t.Errorf("state %s inflight %d", g.cb.State(), inflight)
	}
}
