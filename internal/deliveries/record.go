// Package deliveries keeps what became of each delivery (one event for
// one sink): delivered, retrying or dead-lettered, with when, how many
// attempts, the last status and the latency. It is what `dispatcher events
// show ID` reads to answer "did event X reach Metrix, and when?", which
// the events stream alone cannot: it says what was published, not what
// each sink did with it.
//
// A record is a message on <prefix>.deliveries.<bucket>, bucket 4 hex
// characters of a hash of the event's id (65,536 subjects), in a stream
// of its own (topology: <STREAM>_DELIVERIES, limits,
// streams.deliveries_max_age). Every sink's records of an event share its
// bucket's subject, so a lookup is one batched direct get on one literal
// subject, the records of other events of the bucket told apart by the id
// each carries, and no consumer is made. Buckets, not a subject per
// event: the server keeps state for every subject stored, which held 107
// MiB of its heap for a million events' records against 4 MiB, and cost
// it a fifth more CPU per record (docs/benchmarks.md, "Delivery record
// subjects").
package deliveries

import (
	"crypto/sha256"
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

// Bucket is the subject token of an event's records: the first 16 bits
// of a SHA-256 of its id, in hex, because an id may hold what a subject
// token may not (dots, spaces, wildcards) and may be long, and a hash
// spreads any ids evenly. 65,536 buckets, not fewer: a lookup reads its
// bucket's records of every event, about 2 × events stored / 65,536 (30
// with a million events stored and two sinks each), from every block of
// the stream that holds one (docs/benchmarks.md, "Delivery record
// subjects": with 4,096 a lookup took 40 times longer, for a tenth less
// CPU per record). Not more: the server's idle state grows with the
// buckets used, about 110 bytes each.
func Bucket(eventID string) string {
	var buf [bucketLen]byte
	return string(appendBucket(buf[:0], eventID))
}

// bucketLen is the length of Bucket.
const bucketLen = 4

// appendBucket appends Bucket(eventID) to b. It is what a delivery's
// record costs per event in its subject: one string made, not several
// (the id's bytes, the bucket, the concatenations).
func appendBucket(b []byte, eventID string) []byte {
	var in [64]byte // an id this long or shorter is hashed from the stack
	sum := sha256.Sum256(append(in[:0], eventID...))
	return append(b, hex[sum[0]>>4], hex[sum[0]&15], hex[sum[1]>>4], hex[sum[1]&15])
}

// Subject is where an event's records are stored under prefix, with the
// records of the other events of its bucket.
func Subject(prefix, eventID string) string {
	var buf [96]byte
	b := append(append(buf[:0], prefix...), ".deliveries."...)
	return string(appendBucket(b, eventID))
}

// Subjects is the deliveries stream's subjects under prefix.
func Subjects(prefix string) string { return prefix + ".deliveries.>" }
