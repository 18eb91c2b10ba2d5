package config

import (
	"fmt"
	"time"

	"github.com/chapar-dev/chapar/internal/retry"
)

// sinkKeyErrors validates the keys a sink can inherit, under the key
// prefix at (sinks[0] or sink_defaults).
func sinkKeyErrors(at string, concurrency, maxAckPending int, timeout time.Duration, p retry.Policy, b retry.BreakerSettings) []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{at, key}, args...)...))
	}
	if concurrency < 1 || concurrency > 1024 {
		bad("concurrency", "is %d; use 1 to 1024", concurrency)
	}
	if maxAckPending < concurrency {
		bad("max_ack_pending", "is %d; it must be at least concurrency (%d), and replicas × concurrency to keep every replica busy", maxAckPending, concurrency)
	}
	if timeout <= 0 {
		bad("timeout", "is %s; it must be positive, e.g. 10s", timeout)
	}
	errs = append(errs, p.Validate(at+".retry")...)
	// What retry.Policy.Validate leaves to its callers: a zero cap would
	// retry at once on a Retry-After, and a negative bound reads as none.
	if p.MaxElapsed < 0 {
		bad("retry.max_elapsed", "is %s; use 0 (no bound) or a positive duration, e.g. 24h", p.MaxElapsed)
	}
	if p.MaxRetryAfter <= 0 {
		bad("retry.max_retry_after", "is %s; it must be positive, e.g. 15m", p.MaxRetryAfter)
	}
	errs = append(errs, b.Validate(at+".breaker")...)
	if b.Interval < 0 {
		bad("breaker.interval", "is %s; use 0 (never clear the failure count) or a positive duration, e.g. 1m", b.Interval)
	}
	return errs
}

// MaxBatchItems bounds batch.max_items whatever the vendor: a vendor's own
// limit may be lower (Chabok's trackBulk takes 1,000), and the sink says so.
const MaxBatchItems = 10_000

// batchErrors validates a sink's batch key.
func batchErrors(at string, b Batch, maxAckPending int, ackWait time.Duration) []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.batch.%s: "+format, append([]any{at, key}, args...)...))
	}
	if b.MaxItems < 1 || b.MaxItems > MaxBatchItems {
		bad("max_items", "is %d; use 1 to %d, e.g. 500 (remove batch to send one event per request)", b.MaxItems, MaxBatchItems)
	}
	switch {
	case b.MaxWait <= 0:
		bad("max_wait", "is %s; it must be positive, e.g. 50ms", b.MaxWait)
	case ackWait > 0 && b.MaxWait > ackWait/4:
		bad("max_wait", "is %s; events wait for their batch with their ack timer running, so keep it under a quarter of dispatcher.ack_wait (%s), e.g. 50ms", b.MaxWait, ackWait)
	}
	if b.MaxItems >= 1 && maxAckPending < b.MaxItems {
		errs = append(errs, fmt.Errorf("%s.max_ack_pending: is %d, less than batch.max_items (%d): no batch could fill; "+
			"set it to at least batch.max_items × (concurrency + 1), or leave it out to have that", at, maxAckPending, b.MaxItems))
	}
	return errs
}
