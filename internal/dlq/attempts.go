package dlq

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Bounds of an attempt log. It travels in one header of every retry and
// dead letter (topology.HeaderAttemptLog), within the streams'
// HeaderAllowance of 16 KiB next to the producer's own headers: ten
// entries of at most ~600 bytes each (clipped and control characters
// replaced before encoding) keep it under 8 KiB in the worst case, and an
// operator learns more from the last ten attempts and the total than from
// the fiftieth 503 of an outage.
const (
	MaxLoggedAttempts = 10
	maxAttemptError   = 200
	maxAttemptCode    = 64
)

// Attempt is one vendor request made for a delivery.
type Attempt struct {
	At time.Time `json:"at"`
	// Replay is the delivery's replay count when the request was made:
	// 0 before any replay, n during the n-th replay of its dead letter.
	Replay int `json:"replay"`
	// Status and Code are the vendor's HTTP status and error code (0 and
	// empty when no answer came, e.g. a connection error).
	Status    int    `json:"status,omitempty"`
	Code      string `json:"code,omitempty"`
	Error     string `json:"error,omitempty"`
	LatencyMS int64  `json:"latency_ms"`
}

// AttemptLog is the bounded log of a delivery's attempts, across its
// retries and the replays of its dead letter: the last MaxLoggedAttempts
// requests, oldest first, and how many were made in all.
type AttemptLog struct {
	Total    int       `json:"total"`
	Attempts []Attempt `json:"attempts"`
}

// Add appends one attempt, clipping its text, and drops the oldest entry
// beyond the bound.
func (l *AttemptLog) Add(a Attempt) {
	a.Code = clipText(a.Code, maxAttemptCode)
	a.Error = clipText(a.Error, maxAttemptError)
	l.Total++
	l.Attempts = append(l.Attempts, a)
	if n := len(l.Attempts) - MaxLoggedAttempts; n > 0 {
		// A fresh slice: a log copied into a record must not share its
		// array with the delivery that goes on appending.
		l.Attempts = append([]Attempt(nil), l.Attempts[n:]...)
	}
}

// Dropped is how many earlier attempts the log no longer lists.
func (l AttemptLog) Dropped() int { return max(l.Total-len(l.Attempts), 0) }

// Clone is a copy that shares nothing with l.
func (l AttemptLog) Clone() AttemptLog {
	return AttemptLog{Total: l.Total, Attempts: append([]Attempt(nil), l.Attempts...)}
}

// Encode is the log's header value: compact JSON on one line (control
// characters were replaced by Add, and JSON escapes none of what is left
// into a line break). An empty log encodes to "".
func (l AttemptLog) Encode() string {
	if l.Total == 0 && len(l.Attempts) == 0 {
		return ""
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false) // '<' as itself, not six bytes of \u003c
	if err := enc.Encode(l); err != nil {
		return "" // cannot happen for these field types; the log is best effort
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// DecodeAttemptLog reads a header value written by Encode. An empty value
// is an empty log. A malformed one is an error, and its callers carry on
// with an empty log: the history is for people, never a reason to fail a
// delivery. A log longer than the bound (written by hand or by a later
// version) keeps its last entries, and a total below the entries' count
// is raised to it.
func DecodeAttemptLog(s string) (AttemptLog, error) {
	var l AttemptLog
	if s == "" {
		return l, nil
	}
	if err := json.Unmarshal([]byte(s), &l); err != nil {
		return AttemptLog{}, fmt.Errorf("dlq: attempt log: %w", err)
	}
	if l.Total < 0 {
		return AttemptLog{}, fmt.Errorf("dlq: attempt log: negative total %d", l.Total)
	}
	if n := len(l.Attempts) - MaxLoggedAttempts; n > 0 {
		l.Attempts = l.Attempts[n:]
	}
	for i := range l.Attempts {
		l.Attempts[i].Code = clipText(l.Attempts[i].Code, maxAttemptCode)
		l.Attempts[i].Error = clipText(l.Attempts[i].Error, maxAttemptError)
	}
	l.Total = max(l.Total, len(l.Attempts))
	return l, nil
}

// clipText makes s one line of at most n bytes of valid UTF-8 (plus an
// ellipsis when cut): vendor text is untrusted and must neither break a
// header nor grow it.
func clipText(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	c := envelope.Clip(s, n)
	if len(c) < len(s) {
		c += "…"
	}
	return c
}
