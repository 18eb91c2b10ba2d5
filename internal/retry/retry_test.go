package retry_test

import (
	"testing"
	"time"

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
