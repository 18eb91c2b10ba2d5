package dispatch

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/sinks"
)

func TestDecide(t *testing.T) {
	p := retry.Policy{InitialInterval: time.Second, Multiplier: 2, MaxInterval: time.Minute,
		MaxAttempts: 3, MaxElapsed: time.Hour, MaxRetryAfter: 10 * time.Minute}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	first := now.Add(-time.Minute)
	transient := func(status int, retryAfter time.Duration) error {
		return &sinks.Error{Reason: outcome.RetriesExhausted, Transient: true, Status: status, RetryAfter: retryAfter}
	}
	permanent := func(status int, reason outcome.Reason, code string) error {
		return &sinks.Error{Reason: reason, Status: status, Code: code}
	}
	cases := []struct {
		name       string
		h          History
		err        error
		vendorDown bool
		want       Verdict
	}{
		{"2xx acks", History{Attempts: 1}, nil, false, Verdict{Action: Ack}},
		{"2xx after failures acks", History{Attempts: 3, Counted: 2, First: first}, nil, false, Verdict{Action: Ack, Counted: 2}},
		{"400 dead-letters at once", History{Attempts: 1}, permanent(400, outcome.VendorRejected, "BAD_REQUEST"), false,
			Verdict{Action: DeadLetter, Reason: outcome.VendorRejected}},
		{"401 dead-letters", History{Attempts: 1}, permanent(401, outcome.VendorRejected, ""), false,
			Verdict{Action: DeadLetter, Reason: outcome.VendorRejected}},
		{"404 vendor code dead-letters", History{Attempts: 1}, permanent(404, outcome.VendorRejected, "EVENT_TYPE_DOES_NOT_EXIST"), false,
			Verdict{Action: DeadLetter, Reason: outcome.VendorRejected}},
		{"invalid for vendor dead-letters without a request", History{}, permanent(0, outcome.InvalidForVendor, ""), false,
			Verdict{Action: DeadLetter, Reason: outcome.InvalidForVendor}},
		{"permanent even while vendor down", History{Attempts: 1}, permanent(403, outcome.VendorRejected, "S2S_FEATURE_NOT_AVAILABLE"), true,
			Verdict{Action: DeadLetter, Reason: outcome.VendorRejected}},
		{"first 503 retries after the initial interval", History{Attempts: 1, First: now}, transient(503, 0), false,
			Verdict{Action: Retry, Delay: time.Second, Counted: 1}},
		{"second 500 backs off", History{Attempts: 2, Counted: 1, First: first}, transient(500, 0), false,
			Verdict{Action: Retry, Delay: 2 * time.Second, Counted: 2}},
		{"third charged failure exhausts max_attempts", History{Attempts: 3, Counted: 2, First: first}, transient(502, 0), false,
			Verdict{Action: DeadLetter, Reason: outcome.RetriesExhausted, Counted: 3}},
		{"network error counts as transient", History{Attempts: 1, First: now}, errors.New("connection reset"), false,
			Verdict{Action: Retry, Delay: time.Second, Counted: 1}},
		{"408 is transient", History{Attempts: 1, First: now}, transient(408, 0), false,
			Verdict{Action: Retry, Delay: time.Second, Counted: 1}},
		{"429 honours Retry-After and is not charged", History{Attempts: 3, Counted: 2, First: first}, transient(429, 30*time.Second), false,
			Verdict{Action: Retry, Delay: 30 * time.Second, Counted: 2}},
		{"429 without Retry-After is not charged", History{Attempts: 7, Counted: 2, First: first}, transient(429, 0), false,
			Verdict{Action: Retry, Delay: time.Minute, Counted: 2}},
		{"503 with Retry-After is throttling", History{Attempts: 1, First: now}, transient(503, 5*time.Second), false,
			Verdict{Action: Retry, Delay: 5 * time.Second}},
		{"Retry-After is clamped", History{Attempts: 1, First: now}, transient(429, 2*time.Hour), false,
			Verdict{Action: Retry, Delay: 10 * time.Minute}},
		{"Retry-After replaces a longer backoff", History{Attempts: 9, Counted: 2, First: first}, transient(503, time.Second), true,
			Verdict{Action: Retry, Delay: time.Second, Counted: 2}},
		{"outage failures are not charged", History{Attempts: 10, Counted: 2, First: first}, transient(503, 0), true,
			Verdict{Action: Retry, Delay: time.Minute, Counted: 2}},
		{"a batch's delivery left unsent after an earlier request's 500 is not charged", History{Attempts: 3, Counted: 2, First: first},
			&sinks.Error{Transient: true, Status: 500, Unsent: true}, false, Verdict{Action: Retry, Delay: 4 * time.Second, Counted: 2}},
		{"max_elapsed bounds even an outage", History{Attempts: 10, Counted: 0, First: now.Add(-time.Hour)}, transient(503, 0), true,
			Verdict{Action: DeadLetter, Reason: outcome.RetriesExhausted}},
		{"max_elapsed bounds throttling", History{Attempts: 2, First: now.Add(-59 * time.Minute)}, transient(429, 2*time.Minute), false,
			Verdict{Action: DeadLetter, Reason: outcome.RetriesExhausted}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Decide(p, c.h, Attempt{Err: c.err, VendorDown: c.vendorDown}, now)
			if got != c.want {
				t.Errorf("Decide = %+v (%s), want %+v (%s)", got, got.Action, c.want, c.want.Action)
			}
		})
	}
}

// Only Chapar's own context ending makes a failure not an attempt. A
// vendor timeout wraps context.DeadlineExceeded exactly as a shutdown
// would, so the error cannot tell them apart: the worker says which.
func TestDecideTellsOurShutdownFromAVendorTimeout(t *testing.T) {
	p := retry.Policy{InitialInterval: time.Second, Multiplier: 2, MaxInterval: time.Minute,
		MaxAttempts: 3, MaxElapsed: time.Hour, MaxRetryAfter: 10 * time.Minute}
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	timeout := &sinks.Error{Reason: outcome.RetriesExhausted, Transient: true, Message: "request failed",
		Err: fmt.Errorf("net/http: request canceled (Client.Timeout exceeded while awaiting headers): %w", context.DeadlineExceeded)}
	cases := []struct {
		name string
		h    History
		a    Attempt
		want Verdict
	}{
		{"our shutdown hands back uncounted", History{Attempts: 1}, Attempt{Err: fmt.Errorf("deliver: %w", context.Canceled), CutShort: true},
			Verdict{Action: HandBack}},
		{"our shutdown during a 5xx hands back", History{Attempts: 2, Counted: 1}, Attempt{Err: timeout, CutShort: true},
			Verdict{Action: HandBack, Counted: 1}},
		{"a vendor timeout is charged and retried", History{Attempts: 1, First: now}, Attempt{Err: timeout},
			Verdict{Action: Retry, Delay: time.Second, Counted: 1}},
		{"a bare deadline error from a sink is charged", History{Attempts: 1, First: now}, Attempt{Err: context.DeadlineExceeded},
			Verdict{Action: Retry, Delay: time.Second, Counted: 1}},
		{"the third timeout exhausts max_attempts", History{Attempts: 3, Counted: 2, First: now}, Attempt{Err: timeout},
			Verdict{Action: DeadLetter, Reason: outcome.RetriesExhausted, Counted: 3}},
		{"a timeout while the vendor is down is not charged", History{Attempts: 4, Counted: 1, First: now}, Attempt{Err: timeout, VendorDown: true},
			Verdict{Action: Retry, Delay: 8 * time.Second, Counted: 1}},
		{"2xx as shutdown begins acks", History{Attempts: 1}, Attempt{CutShort: true}, Verdict{Action: Ack}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := Decide(p, c.h, c.a, now); got != c.want {
				t.Errorf("Decide = %+v (%s), want %+v (%s)", got, got.Action, c.want, c.want.Action)
			}
		})
	}
}

func BenchmarkDecide(b *testing.B) {
	p := retry.DefaultPolicy()
	now := time.Now()
	err := &sinks.Error{Reason: outcome.RetriesExhausted, Transient: true, Status: 503}
	b.ReportAllocs()
	for b.Loop() {
		_ = Decide(p, History{Attempts: 2, Counted: 1, First: now}, Attempt{Err: err}, now)
		_ = Decide(p, History{Attempts: 1}, Attempt{}, now)
	}
}
