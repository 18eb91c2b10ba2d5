package retry

import (
	"fmt"
	"time"

	"github.com/sony/gobreaker/v2"
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
