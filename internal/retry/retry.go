// Package retry is Chapar's delivery policy in one place: how long to wait
// before the next attempt, when to give up, and when to stop calling a vendor
// altogether (the circuit breaker).
//
// Waits are not slept in goroutines: the dispatcher stores each retry in
// JetStream as a message scheduled for its time, so a crash or restart
// loses no retry. The breaker itself lives in the dispatcher's gate.
package retry

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cenkalti/backoff/v4"
)

// Policy is a sink's retry schedule: exponential backoff with jitter and a
// cap, bounded by attempts and by elapsed time.
type Policy struct {
	// InitialInterval is the wait after the first failed attempt.
	InitialInterval time.Duration `yaml:"initial_interval"`
	// Multiplier grows the wait after each failure.
	Multiplier float64 `yaml:"multiplier"`
	// Jitter spreads waits by ±Jitter (0..1) so retries after an outage do
	// not arrive at the vendor in one wave.
	Jitter float64 `yaml:"jitter"`
	// MaxInterval caps a single wait.
	MaxInterval time.Duration `yaml:"max_interval"`
	// MaxAttempts bounds vendor requests per event (0: no bound).
	MaxAttempts int `yaml:"max_attempts"`
	// MaxElapsed bounds the time from the first attempt (0: no bound).
	MaxElapsed time.Duration `yaml:"max_elapsed"`
	// MaxRetryAfter clamps a vendor's Retry-After so a bogus value cannot
	// park an event for days.
	MaxRetryAfter time.Duration `yaml:"max_retry_after"`
}

// DefaultPolicy suits vendor APIs: a blip is retried within seconds, an
// outage is ridden out with waits growing to 10 minutes, and an event is
// given up on after 25 attempts or 24 hours, whichever comes first (about
// 3.5 hours of backoff, the rest is room for breaker pauses).
func DefaultPolicy() Policy {
	return Policy{
		InitialInterval: 2 * time.Second,
		Multiplier:      2,
		Jitter:          0.3,
		MaxInterval:     10 * time.Minute,
		MaxAttempts:     25,
		MaxElapsed:      24 * time.Hour,
		MaxRetryAfter:   15 * time.Minute,
	}
}

// Validate names every field that cannot work, under the key prefix at.
func (p Policy) Validate(at string) []error {
	var errs []error
	if p.InitialInterval <= 0 {
		errs = append(errs, fmt.Errorf("%s.initial_interval: must be positive, e.g. 2s", at))
	}
	// Written so that NaN (YAML's .nan) fails too: its backoff is -292 years.
	if !(p.Multiplier >= 1) || math.IsInf(p.Multiplier, 0) {
		errs = append(errs, fmt.Errorf("%s.multiplier: must be at least 1, e.g. 2", at))
	}
	if !(p.Jitter >= 0 && p.Jitter < 1) {
		errs = append(errs, fmt.Errorf("%s.jitter: must be in [0, 1), e.g. 0.3", at))
	}
	if p.MaxInterval < p.InitialInterval {
		errs = append(errs, fmt.Errorf("%s.max_interval: must be at least initial_interval", at))
	}
	if p.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("%s.max_attempts: must be 0 (unbounded) or more", at))
	}
	if p.MaxAttempts == 0 && p.MaxElapsed == 0 {
		errs = append(errs, fmt.Errorf("%s: set max_attempts or max_elapsed (24h, say), or an event could retry forever", at))
	}
	return errs
}

// Backoff is the wait after the given failed attempt (1-based), with jitter.
func (p Policy) Backoff(attempt int) time.Duration {
	b := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(p.InitialInterval),
		backoff.WithMultiplier(p.Multiplier),
		backoff.WithRandomizationFactor(p.Jitter),
		backoff.WithMaxInterval(p.MaxInterval),
		backoff.WithMaxElapsedTime(0),
	)
	d := p.InitialInterval
	for range max(attempt, 1) {
		d = b.NextBackOff()
	}
	return d
}

// Decision is what to do after a transient failure.
type Decision struct {
	Retry bool
	Delay time.Duration
}

// Next decides, after attempt number attempt failed transiently, whether to
// retry and after how long. retryAfter is the vendor's Retry-After (0 when
// absent); it is honoured, clamped to MaxRetryAfter, and never shortened by
// backoff. vendorDown says the failure was the vendor's, not the event's
// (the breaker is open, or this was its probe): such attempts do not count
// against MaxAttempts, only against MaxElapsed, so an outage dead-letters
// nothing that the retry window can still save.
func (p Policy) Next(attempt int, firstAttempt, now time.Time, retryAfter time.Duration, vendorDown bool) Decision {
	if p.MaxAttempts > 0 && attempt >= p.MaxAttempts && !vendorDown {
		return Decision{}
	}
	delay := p.Backoff(attempt)
	if retryAfter > 0 {
		delay = min(retryAfter, p.MaxRetryAfter)
	}
	if p.MaxElapsed > 0 && now.Add(delay).Sub(firstAttempt) > p.MaxElapsed {
		return Decision{}
	}
	return Decision{Retry: true, Delay: delay}
}

// temporary is the classification retry needs from a delivery error; the
// sinks' errors implement it.
type temporary interface{ Temporary() bool }

// IsTransient reports whether err is worth retrying: errors that say so, and
// any error that does not classify itself (a network failure, say).
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	var t temporary
	if errors.As(err, &t) {
		return t.Temporary()
	}
	return true
}
