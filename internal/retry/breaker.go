package retry

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.uber.org/zap"
)

// BreakerSettings say when a sink's breaker opens and how it probes.
type BreakerSettings struct {
	// FailureThreshold is how many consecutive transient failures open it.
	FailureThreshold uint32 `yaml:"failure_threshold"`
	// OpenTimeout is how long it stays open before one probe is let through.
	OpenTimeout time.Duration `yaml:"open_timeout"`
	// Interval clears the failure count while closed (0: never).
	Interval time.Duration `yaml:"interval"`
}

// DefaultBreakerSettings open after 5 consecutive transient failures and
// probe every 15 seconds: quick to stop hammering a vendor that is down,
// quick to notice it is back.
func DefaultBreakerSettings() BreakerSettings {
	return BreakerSettings{FailureThreshold: 5, OpenTimeout: 15 * time.Second, Interval: time.Minute}
}

// Validate names every field that cannot work, under the key prefix at.
func (s BreakerSettings) Validate(at string) []error {
	var errs []error
	if s.FailureThreshold == 0 {
		errs = append(errs, fmt.Errorf("%s.failure_threshold: must be at least 1, e.g. 5", at))
	}
	if s.OpenTimeout <= 0 {
		errs = append(errs, fmt.Errorf("%s.open_timeout: must be positive, e.g. 15s", at))
	}
	return errs
}

// State is a breaker's state as Chapar reports it.
type State = gobreaker.State

// Breaker guards one sink. Only transient failures trip it, so one bad event
// (a 400) never stops a healthy vendor. While it is open, workers wait at
// Wait instead of pulling work, so an outage burns no delivery attempts;
// half-open, exactly one worker goes through as the probe.
type Breaker struct {
	cb    *gobreaker.CircuitBreaker[struct{}]
	probe chan struct{}
	poll  time.Duration
}

// NewBreaker builds the breaker of the named sink; state changes are logged
// and passed to onChange (for metrics), which may be nil.
func NewBreaker(sink string, s BreakerSettings, log *zap.Logger, onChange func(sink string, to State)) *Breaker {
	b := &Breaker{probe: make(chan struct{}, 1), poll: min(s.OpenTimeout/4, 250*time.Millisecond)}
	b.probe <- struct{}{}
	b.cb = gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        sink,
		MaxRequests: 1,
		Interval:    s.Interval,
		Timeout:     s.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= s.FailureThreshold },
		IsSuccessful: func(err error) bool {
			return !IsTransient(err)
		},
		OnStateChange: func(name string, from, to gobreaker.State) {
			log.Warn("circuit breaker changed state", zap.String("sink", name),
				zap.Stringer("from", from), zap.Stringer("to", to))
			if onChange != nil {
				onChange(name, to)
			}
		},
	})
	return b
}

// State is the breaker's current state.
func (b *Breaker) State() State { return b.cb.State() }

// Closed reports whether the breaker is closed (the vendor looks healthy).
func (b *Breaker) Closed() bool { return b.cb.State() == gobreaker.StateClosed }

// Wait blocks until a request may be sent: at once while closed; while
// half-open, for the single probe slot; while open, until it half-opens.
// The returned release must be called after the request; probe says the
// request is the half-open probe. tick, if not nil, is called at every poll
// while waiting (to keep a held message alive; it rate-limits itself).
func (b *Breaker) Wait(ctx context.Context, tick func()) (release func(), probe bool, err error) {
	t := time.NewTicker(b.poll)
	defer t.Stop()
	for {
		switch b.cb.State() {
		case gobreaker.StateClosed:
			return func() {}, false, nil
		case gobreaker.StateHalfOpen:
			select {
			case <-b.probe:
				return func() { b.probe <- struct{}{} }, true, nil
			default:
			}
		}
		select {
		case <-ctx.Done():
			return nil, false, fmt.Errorf("waiting for the circuit breaker: %w", ctx.Err())
		case <-t.C:
			if tick != nil {
				tick()
			}
		}
	}
}

// WaitNotOpen blocks while the breaker is open: a sink's workers call it
// before pulling work, so an outage leaves events in JetStream untouched.
func (b *Breaker) WaitNotOpen(ctx context.Context) error {
	t := time.NewTicker(b.poll)
	defer t.Stop()
	for b.cb.State() == gobreaker.StateOpen {
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the circuit breaker: %w", ctx.Err())
		case <-t.C:
		}
	}
	return nil
}

// ErrRejected is returned by Do when the breaker refused the request: no
// vendor request was made, so it is not an attempt.
var ErrRejected = errors.New("circuit breaker rejected the request")

// Do runs a vendor request through the breaker.
func (b *Breaker) Do(fn func() error) error {
	_, err := b.cb.Execute(func() (struct{}, error) { return struct{}{}, fn() })
	if errors.Is(err, gobreaker.ErrOpenState) || errors.Is(err, gobreaker.ErrTooManyRequests) {
		return ErrRejected
	}
	return err
}
