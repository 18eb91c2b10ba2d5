package retry_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/retry"
)

func TestBackoffGrowsWithJitterAndCap(t *testing.T) {
	p := retry.DefaultPolicy()
	for attempt := 1; attempt <= 30; attempt++ {
		want := min(time.Duration(float64(p.InitialInterval)*pow(p.Multiplier, attempt-1)), p.MaxInterval)
		lo := time.Duration(float64(want) * (1 - p.Jitter))
		hi := time.Duration(float64(want) * (1 + p.Jitter))
		for range 20 {
			if d := p.Backoff(attempt); d < lo || d > hi {
				t.Fatalf("attempt %d: %s outside [%s, %s]", attempt, d, lo, hi)
			}
		}
	}
}

func pow(b float64, n int) float64 {
	r := 1.0
	for range n {
		r *= b
	}
	return r
}

func TestNext(t *testing.T) {
	p := retry.Policy{InitialInterval: time.Second, Multiplier: 2, MaxInterval: time.Minute, MaxAttempts: 5, MaxElapsed: time.Hour, MaxRetryAfter: 10 * time.Minute}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		attempt    int
		now        time.Time
		retryAfter time.Duration
		vendorDown bool
		want       retry.Decision
	}{
		{"first failure", 1, start, 0, false, retry.Decision{Retry: true, Delay: time.Second}},
		{"fourth failure", 4, start, 0, false, retry.Decision{Retry: true, Delay: 8 * time.Second}},
		{"attempts spent", 5, start, 0, false, retry.Decision{}},
		{"attempts spent while the vendor is down", 5, start, 0, true, retry.Decision{Retry: true, Delay: 16 * time.Second}},
		{"window spent", 2, start.Add(time.Hour), 0, true, retry.Decision{}},
		{"Retry-After wins over backoff", 1, start, 30 * time.Second, false, retry.Decision{Retry: true, Delay: 30 * time.Second}},
		{"Retry-After clamped", 1, start, 24 * time.Hour, false, retry.Decision{Retry: true, Delay: 10 * time.Minute}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := p.Next(tt.attempt, start, tt.now, tt.retryAfter, tt.vendorDown); got != tt.want {
				t.Errorf("Next = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestMaxDeliveriesCoversTheWindow(t *testing.T) {
	p := retry.DefaultPolicy()
	n := p.MaxDeliveries()
	// The shortest possible schedule must not outrun JetStream's bound
	// before the window ends.
	var elapsed time.Duration
	d := p.InitialInterval
	steps := 0
	for elapsed < p.MaxElapsed {
		elapsed += time.Duration(float64(d) * (1 - p.Jitter))
		d = min(time.Duration(float64(d)*p.Multiplier), p.MaxInterval)
		steps++
	}
	if n <= steps {
		t.Errorf("MaxDeliveries %d does not exceed the %d deliveries that fit in %s", n, steps, p.MaxElapsed)
	}
	if (retry.Policy{MaxAttempts: 0}).MaxDeliveries() != -1 {
		t.Error("an unbounded policy must not bound JetStream")
	}
}

type classified struct{ transient bool }

func (c classified) Error() string   { return "x" }
func (c classified) Temporary() bool { return c.transient }

func TestBreakerOpensOnTransientOnlyAndProbesOneAtATime(t *testing.T) {
	var states []retry.State
	b := retry.NewBreaker("s", retry.BreakerSettings{FailureThreshold: 3, OpenTimeout: 200 * time.Millisecond}, zap.NewNop(),
		func(_ string, to retry.State) { states = append(states, to) })
	permanent := classified{false}
	for range 10 {
		_ = b.Do(func() error { return permanent })
	}
	if !b.Closed() {
		t.Fatal("permanent errors opened the breaker")
	}
	for range 3 {
		_ = b.Do(func() error { return classified{true} })
	}
	if b.Closed() {
		t.Fatal("3 transient failures did not open it")
	}
	if err := b.Do(func() error { t.Fatal("called while open"); return nil }); !errors.Is(err, retry.ErrRejected) {
		t.Fatalf("open breaker: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	release, probe, err := b.Wait(ctx, nil)
	if err != nil || !probe {
		t.Fatalf("Wait: probe %v err %v", probe, err)
	}
	// A second worker must wait while the probe is out.
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	if _, _, err := b.Wait(short, nil); err == nil {
		t.Fatal("two probes at once")
	}
	if err := b.Do(func() error { return nil }); err != nil {
		t.Fatal(err)
	}
	release()
	if !b.Closed() {
		t.Fatal("a successful probe did not close it")
	}
	if len(states) != 3 {
		t.Errorf("state changes %v, want open, half-open, closed", states)
	}
}
