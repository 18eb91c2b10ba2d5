package dispatch_test

// Review h-retry: a vendor that throttles is answered by a pause of the
// whole sink (docs/design.md, "The verdict": "429, or any answer with
// Retry-After ... the whole sink pauses"; docs/operations.md: "429s never
// open the breaker: the pause handles them"). Against the real embedded
// JetStream and the emulator.

import (
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// After the first throttled answer, no more requests start than were
// already in flight (concurrency) until the pause ends: a 429 with a
// Retry-After pauses the sink for it, a 429 without one for at least the
// backoff's first wait, and a Retry-After too large for a Duration is
// clamped to max_retry_after, not read as "no Retry-After" or as a few
// hundred milliseconds.
func TestThrottledVendorIsNotHammered(t *testing.T) {
	const events, concurrency = 40, 4
	const window = 1500 * time.Millisecond // below every pause below
	cases := []struct {
		name       string
		status     int
		retryAfter string
	}{
		{"429 with Retry-After 2", 429, "2"}, // the control: passes
		{"429 without Retry-After", 429, ""},
		// 1e10 s: time.Duration(s)*time.Second overflows to a negative,
		// read as no Retry-After.
		{"429 with Retry-After 1e10 s", 429, "10000000000"},
		// Overflows to +290 ms: a probe every 290 ms.
		{"429 with Retry-After 18446744074 s", 429, "18446744074"},
		// Beyond int64: strconv.Atoi fails, read as garbage.
		{"429 with Retry-After 1e20 s", 429, "100000000000000000000"},
		// A 503 with a huge Retry-After is throttling too; read as none it
		// is a charged 503 and only the breaker (threshold 5) stops it.
		{"503 with Retry-After 1e10 s", 503, "10000000000"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := testenv.New(t)
			sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
			sink.Concurrency = concurrency
			sink.Retry.InitialInterval = 2 * time.Second
			sink.Retry.MaxInterval = 8 * time.Second
			sink.Retry.Jitter = 0
			sink.Retry.MaxRetryAfter = 3 * time.Second
			sink.Breaker.FailureThreshold = 5
			vendor := e.Emu.Vendor(emulator.MetrixGateway)
			vendor.SetFault(emulator.Fault{Status: c.status, RetryAfter: c.retryAfter})
			e.Start([]config.Sink{sink}, gatewayRoute)
			publishTracks(t, e, events, "order_paid")
			var first time.Time
			testenv.Eventually(t, 10*time.Second, "a first throttled answer", func() bool {
				for _, r := range vendor.Requests() {
					if r.Status == c.status {
						first = r.At
						return true
					}
				}
				return false
			})
			// Observe the window after the first answer (or every event
			// requested, whichever comes first).
			testenv.Eventually(t, 5*time.Second, "the window to pass", func() bool {
				return time.Since(first) > window || vendor.Count(0) >= events
			})
			started := 0
			for _, r := range vendor.Requests() {
				if r.Arrived.After(first) && r.Arrived.Sub(first) < window {
					started++
				}
			}
			// The requests in flight when the first answer came are not
			// recalled: at most concurrency-1 more.
			if started > concurrency-1 {
				t.Errorf("%d requests started within %s after the vendor throttled (%d %q), want at most %d; %d requests in all",
					started, window, c.status, c.retryAfter, concurrency-1, vendor.Count(0))
			}
		})
	}
}
