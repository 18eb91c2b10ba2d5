package dispatch_test

import (
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// maxInWindow is the most requests the vendor received in any window of
// length w.
func maxInWindow(reqs []emulator.Request, w time.Duration) int {
	most, lo := 0, 0
	for hi := range reqs {
		for reqs[hi].At.Sub(reqs[lo].At) >= w {
			lo++
		}
		most = max(most, hi-lo+1)
	}
	return most
}

// A sink's rate_limit is never exceeded, however large the backlog.
func TestRateLimitIsNeverExceeded(t *testing.T) {
	e := testenv.New(t)
	sink := e.Sink("chabok", emulator.Chabok, nil, nil)
	sink.Concurrency = 8
	sink.RateLimit = &config.RateLimit{PerSecond: 100, Burst: 5}
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"chabok"}}})
	publishTracks(t, e, 200, "order_paid")
	vendor := e.Emu.Vendor(emulator.Chabok)
	testenv.Eventually(t, 20*time.Second, "200 delivered", func() bool { return vendor.Count(200) == 200 })
	// A token bucket of 100/s with a burst of 5 admits at most 5 + 100·w
	// requests in any window w.
	if most := maxInWindow(vendor.Requests(), time.Second); most > 105 {
		t.Errorf("%d requests within one second; rate_limit is 100/s with a burst of 5", most)
	}
}

// A vendor throttling at a fixed quota: the sink's pace comes down to it on
// the 429s and stays near it, so few requests are throttled, and nothing
// is dead-lettered.
func TestRateLimitAdaptsToTheVendorsQuota(t *testing.T) {
	e := testenv.New(t)
	sink := e.Sink("chabok", emulator.Chabok, nil, nil)
	sink.Concurrency = 8
	sink.Retry.MaxAttempts = 2 // throttling is not charged: nothing may exhaust
	sink.RateLimit = &config.RateLimit{PerSecond: 200, Burst: 5}
	vendor := e.Emu.Vendor(emulator.Chabok)
	vendor.SetQuota(60, 5)
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"chabok"}}})
	publishTracks(t, e, 300, "order_paid")
	testenv.Eventually(t, 30*time.Second, "300 delivered", func() bool { return vendor.Count(200) == 300 })
	// Without adapting, 200/s against a quota of 60/s would have 70% of
	// the requests throttled.
	if throttled := vendor.Count(429); throttled > 90 {
		t.Errorf("%d requests throttled for 300 accepted: the pace did not come down to the quota", throttled)
	}
	if recs := deadLetters(t, e, dlq.Filter{}); len(recs) != 0 {
		t.Errorf("%d dead letters", len(recs))
	}
	t.Logf("%d throttled for 300 accepted", vendor.Count(429))
}
