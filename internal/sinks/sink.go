// Package sinks delivers events to vendors. A vendor is one file here that
// registers itself (registry.go) with its settings, its mapping from the
// envelope, its auth and its table of responses; httpcall.go holds the HTTP
// mechanics every vendor shares, and this file what a sink is and how a
// delivery fails.
package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Delivery is one event on its way to one sink.
type Delivery struct {
	Event *envelope.Event
	// ReceivedAt is when Chapar accepted the event: the event's time when
	// the producer gave none.
	ReceivedAt time.Time
}

// Sink delivers to one vendor instance. Deliver returns nil once the vendor
// answered 2xx, or an *Error saying whether to retry. (A sink's name is its
// config's; the dispatcher keeps it beside the sink.)
type Sink interface {
	Deliver(ctx context.Context, d *Delivery) error
}

// Reasons a delivery fails with; internal/outcome owns them.
const (
	ReasonInvalidEnvelope  = outcome.InvalidEnvelope
	ReasonUnmappedEvent    = outcome.UnmappedEvent
	ReasonUnsupportedEvent = outcome.UnsupportedEvent
	ReasonInvalidForVendor = outcome.InvalidForVendor
	ReasonVendorRejected   = outcome.VendorRejected
	ReasonRetriesExhausted = outcome.RetriesExhausted
)

// Error is a failed delivery, classified.
type Error struct {
	Reason     outcome.Reason
	Transient  bool
	Status     int    // HTTP status, 0 before any response
	Code       string // the vendor's own error code, when it gave one
	Message    string
	RetryAfter time.Duration
	Err        error
	// Unsent says no request carried this delivery: an earlier request
	// of its batch failed transiently (this is that request's error,
	// Retry-After and all), which ended the batch's sending. It is no
	// attempt of the event's: retried, never charged to max_attempts.
	Unsent bool
}

// unsentAfter is the error of a batch's delivery left unsent because the
// request before it failed with err (stopsBatch).
func unsentAfter(err error) error {
	var se *Error
	if errors.As(err, &se) {
		c := *se
		c.Unsent = true
		return &c
	}
	return &Error{Transient: true, Err: err, Unsent: true}
}

func (e *Error) Error() string {
	var b strings.Builder
	if e.Unsent {
		b.WriteString("not sent, an earlier request of its batch failed: ")
	}
	// A transient failure is not yet a reason: only the policy decides
	// that retries are exhausted, so its text must not claim it.
	if e.Transient {
		b.WriteString("transient failure")
	} else {
		b.WriteString(string(e.Reason))
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether a retry may succeed; internal/retry reads it.
func (e *Error) Temporary() bool { return e.Transient }

// reject is a permanent failure found before any request was made.
func reject(reason outcome.Reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// mapName turns an envelope event name into the vendor's, via the sink's
// events table; with requireMapping unset, unmapped names pass unchanged.
func mapName(events map[string]string, name string, requireMapping bool, sink string) (string, error) {
	if v, ok := events[name]; ok && v != "" {
		return v, nil
	}
	if requireMapping {
		return "", reject(ReasonUnmappedEvent, "event %q has no entry in sink %s's events table; add %q: <vendor name>", name, sink, name)
	}
	return name, nil
}

// stringify renders a property value as the text a string-only vendor field
// needs: numbers as written, booleans as true/false, arrays as JSON.
func stringify(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// Attacher is a sink that keeps state in JetStream (the Metrix gateway's
// per-user times). The dispatcher attaches it before consuming; a sink
// used without (a test calling Deliver, the benchmarks' direct calls)
// keeps that state in its own process instead.
type Attacher interface {
	Attach(ctx context.Context, st State) error
}

// State is where an Attacher keeps its state: key-value buckets beside the
// deployment's streams, with their replicas and storage.
type State struct {
	JS jetstream.JetStream
	// Prefix names the buckets: <Prefix>_<name>, as the streams are named.
	Prefix   string
	Replicas int
	Memory   bool // memory storage, as the streams
}
