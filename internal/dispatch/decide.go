package dispatch

import (
	"errors"
	"time"

	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/sinks"
)

// Action is what becomes of a message after one delivery attempt.
type Action int

const (
	// Ack: the vendor accepted it (2xx).
	Ack Action = iota
	// Retry: store a copy due after Delay with the attempt counted, then
	// ack the message in hand.
	Retry
	// DeadLetter: record it with Reason, then ack it.
	DeadLetter
	// HandBack: return it to JetStream untouched (no attempt counted),
	// after Delay: Chapar's own shutdown (or a lost ordered lease) cut the
	// request short, or the sink may not send now.
	HandBack
)

func (a Action) String() string {
	return [...]string{"ack", "retry", "dead-letter", "hand-back"}[a]
}

// History is what Chapar knows of one (event, sink) before a decision. It
// travels with the event in its headers (see delivery.go), so it survives
// retries, restarts and other replicas.
type History struct {
	// Attempts counts vendor requests, including the one just made.
	Attempts int
	// Counted counts failures charged to the event before this attempt.
	Counted int
	// First is when the first vendor request was made.
	First time.Time
}

// Attempt describes the request just made.
type Attempt struct {
	// Err is the delivery's result: nil for 2xx, a *sinks.Error, or any
	// other error (transient).
	Err error
	// CutShort says Chapar's own context ended during the request: its
	// shutdown, or an ordered lane whose lease was lost. Only then is a
	// failure not an attempt. A vendor that does not answer in time is
	// an attempt like any other: Go's timeout errors match
	// context.DeadlineExceeded, so the error alone cannot tell the two
	// apart, and a hung vendor must be charged, trip the breaker and end
	// in a dead letter, not be handed back for ever.
	CutShort bool
	// VendorDown says the sink's breaker was not closed or this was its
	// probe: a failure then is the vendor's, not the event's.
	VendorDown bool
}

// Verdict is the decision.
type Verdict struct {
	Action Action
	Delay  time.Duration
	Reason outcome.Reason
	// Counted is History.Counted after this attempt, for the next copy.
	Counted int
}

// Decide is the one place that says what happens to an event after an
// attempt. It is pure but for the policy's jitter: no I/O, no clock of its
// own, so every vendor outcome is table-tested (decide_test.go).
//
//   - 2xx: ack.
//   - Cut short by Chapar's own shutdown: hand back; it was not a real
//     attempt. A vendor timeout, reset or refused connection is not that:
//     it is transient, like a 5xx.
//   - Permanent (400, 401/403, 404, the vendor's own codes, invalid for the
//     vendor): dead-letter with the sink's reason, at once.
//   - Transient (timeouts, 408, 429, 5xx, network): retry after backoff, or
//     after the vendor's Retry-After when it gave one, until the policy's
//     max_attempts or max_elapsed. Throttling (429 or a Retry-After),
//     failures while the vendor is down, and a batch's deliveries left
//     unsent after an earlier request failed are not charged to the event: they
//     count only against max_elapsed, so an outage or a rate limit never
//     exhausts an event the retry window can still save.
func Decide(p retry.Policy, h History, a Attempt, now time.Time) Verdict {
	v := Verdict{Counted: h.Counted}
	if a.Err == nil {
		return v // Ack
	}
	if a.CutShort {
		v.Action = HandBack
		return v
	}
	var serr *sinks.Error
	if errors.As(a.Err, &serr) && !serr.Transient {
		v.Action, v.Reason = DeadLetter, serr.Reason
		return v
	}
	var retryAfter time.Duration
	throttled := false
	if serr != nil {
		retryAfter = serr.RetryAfter
		// Unsent: a batch's delivery no request carried, after an
		// earlier request's failure; not the event's attempt either.
		throttled = serr.Status == 429 || retryAfter > 0 || serr.Unsent
	}
	first := h.First
	if first.IsZero() {
		first = now
	}
	var next retry.Decision
	if a.VendorDown || throttled {
		// Not charged: the backoff still grows with every request.
		next = p.Next(h.Attempts, first, now, retryAfter, true)
	} else {
		v.Counted++
		next = p.Next(v.Counted, first, now, retryAfter, false)
	}
	if !next.Retry {
		v.Action, v.Reason = DeadLetter, outcome.RetriesExhausted
		return v
	}
	v.Action, v.Delay = Retry, next.Delay
	return v
}
