// Package outcome names what can become of one event at one sink. It is
// the one owner of these words: sinks classify vendor answers with them,
// the dispatcher decides with them, dead letters record them and metrics
// count them, so a reason means the same thing everywhere.
package outcome

// Reason says why an event was dead-lettered (or, for Unrouted, not sent).
type Reason string

// Reasons an event is dead-lettered.
const (
	// InvalidEnvelope: the envelope breaks the contract (pkg/envelope).
	InvalidEnvelope Reason = "invalid_envelope"
	// UnknownDestination: the envelope's destinations name a sink no
	// dispatcher runs. Replayable once the sink is configured.
	UnknownDestination Reason = "unknown_destination"
	// UnmappedEvent: the sink's events table has no vendor name for it.
	UnmappedEvent Reason = "unmapped_event"
	// UnsupportedEvent: the vendor has no call for this event type (a
	// Chapar type it does not map, or a producer's own type, which only
	// the webhook takes), found before any request.
	UnsupportedEvent Reason = "unsupported_event"
	// InvalidForVendor: a valid envelope the vendor's documented rules
	// reject, found before any request.
	InvalidForVendor Reason = "invalid_for_vendor"
	// VendorRejected: the vendor answered a permanent error.
	VendorRejected Reason = "vendor_rejected"
	// RetriesExhausted: transient failures outlasted the retry policy.
	RetriesExhausted Reason = "retries_exhausted"
	// HandlerPanic: Chapar itself failed on this message (a bug); the
	// message is kept as a dead letter so it cannot crash-loop replicas.
	HandlerPanic Reason = "handler_panic"
	// PausedPastMaxAge: the sink was paused by an operator for so long
	// that the event neared the events stream's max_age, past which the
	// stream drops it unread; it was dead-lettered instead, without a
	// request (internal/dispatch, rescue.go). Replay it after the resume.
	PausedPastMaxAge Reason = "paused_past_max_age"
)

// Reasons lists every reason, for docs, flags and label checks.
func Reasons() []Reason {
	return []Reason{InvalidEnvelope, UnknownDestination, UnmappedEvent, UnsupportedEvent,
		InvalidForVendor, VendorRejected, RetriesExhausted, HandlerPanic, PausedPastMaxAge}
}

// Replayable reports whether a dead letter of this reason can be put back
// on its sink's queue: an invalid envelope or a panic would fail the same
// way again.
func (r Reason) Replayable() bool {
	return r != InvalidEnvelope && r != HandlerPanic
}

func (r Reason) String() string { return string(r) }
