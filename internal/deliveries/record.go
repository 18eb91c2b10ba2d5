// Package deliveries keeps what became of each delivery (one event for
// one sink): delivered, retrying or dead-lettered, with when, how many
// attempts, the last status and the latency. It is what `dispatcher events
// show ID` reads to answer "did event X reach Metrix, and when?", which
// the events stream alone cannot: it says what was published, not what
// each sink did with it.
//
// A record is a message on <prefix>.deliveries.<key>, key a hash of the
// event's id, in a stream of its own (topology: <STREAM>_DELIVERIES,
// limits, streams.deliveries_max_age). Every sink's records of an event
// share its subject, so a lookup is one batched direct get on one literal
// subject: the server finds it by its subject index, whatever the number
// of events stored, and no consumer is made.
package deliveries

import (
	"crypto/sha256"
	"encoding/base64"
	"time"
)

// State is what became of a delivery, as last recorded.
type State string

const (
	// Delivered: the vendor accepted it (2xx) and the event was acked.
	Delivered State = "delivered"
	// Retrying: an attempt failed and another is scheduled.
	Retrying State = "retrying"
	// DeadLettered: Chapar gave up on it; `dispatcher dlq` has it.
	DeadLettered State = "dead_lettered"
)

// Record is one state of one delivery.
type Record struct {
	EventID string `json:"id"`
	Type    string `json:"type,omitempty"`
	// Subject is the envelope's subject (conventionally the user).
	Subject string `json:"subject,omitempty"`
	Name    string `json:"name,omitempty"`
	Sink    string `json:"sink"`
	State   State  `json:"state"`
	// At is when this state was reached.
	At       time.Time `json:"at"`
	Attempts int       `json:"attempts"`
	// Status, Code and Error are the last attempt's, when it failed.
	Status int    `json:"status,omitempty"`
	Code   string `json:"code,omitempty"`
	Error  string `json:"error,omitempty"`
	// Reason is a dead letter's (internal/outcome), DeadLetter its
	// sequence in the dead-letter stream (`dispatcher dlq show`).
	Reason     string `json:"reason,omitempty"`
	DeadLetter uint64 `json:"dead_letter,omitempty"`
	// Latency is from the event (or its replay) entering JetStream to
	// the vendor's acceptance.
	Latency time.Duration `json:"latency_ns,omitempty"`
	// NextAttempt is when a retrying delivery is tried again.
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	// Stream and Seq are where the event is stored (its events stream
	// and sequence), Origin its name across partitions.
	Stream  string `json:"stream,omitempty"`
	Seq     uint64 `json:"seq,omitempty"`
	Origin  uint64 `json:"origin,omitempty"`
	Replays int    `json:"replays,omitempty"`
}

// Key is the subject token of an event's records: 22 characters of
// base64url over a SHA-256 of its id, because an id may hold what a
// subject token may not (dots, spaces, wildcards) and may be long.
func Key(eventID string) string {
	var buf [keyLen]byte
	return string(appendKey(buf[:0], eventID))
}

// keyLen is the length of Key.
const keyLen = 22

// appendKey appends Key(eventID) to b. It is what a delivery's record
// costs per event in its subject: one string made, not four (the id's
// bytes, the key, and the two concatenations).
func appendKey(b []byte, eventID string) []byte {
	var in [64]byte // an id this long or shorter is hashed from the stack
	sum := sha256.Sum256(append(in[:0], eventID...))
	return base64.RawURLEncoding.AppendEncode(b, sum[:16])
}

// Subject is where an event's records are stored under prefix.
func Subject(prefix, eventID string) string {
	var buf [96]byte
	b := append(append(buf[:0], prefix...), ".deliveries."...)
	return string(appendKey(b, eventID))
}

// Subjects is the deliveries stream's subjects under prefix.
func Subjects(prefix string) string { return prefix + ".deliveries.>" }
