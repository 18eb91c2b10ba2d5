// Package dlq writes, lists, replays and purges dead letters. A dead letter
// is one JetStream message per (event, sink, replay): the original envelope
// bytes and headers unchanged, plus Chapar-DLQ-* headers saying why, on a
// subject of its own that the server keeps to one record.
package dlq

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/topology"
)

// Headers of a dead letter.
const (
	hdrSink         = "Chapar-DLQ-Sink"
	hdrReason       = "Chapar-DLQ-Reason"
	hdrStatus       = "Chapar-DLQ-Status"
	hdrCode         = "Chapar-DLQ-Code"
	hdrAttempts     = "Chapar-DLQ-Attempts"
	hdrFirstAttempt = "Chapar-DLQ-First-Attempt"
	hdrLastAttempt  = "Chapar-DLQ-Last-Attempt"
	hdrError        = "Chapar-DLQ-Error"
	hdrEventID      = "Chapar-DLQ-Event-Id"
	hdrEventType    = "Chapar-DLQ-Event-Type"
	hdrSubject      = "Chapar-DLQ-Subject"
	hdrReleased     = "Chapar-DLQ-Released-Barrier"
	// hdrTombstone marks what is left on a record's subject once it was
	// replayed or purged (its value says which): not a dead letter, but
	// the reason a late second write of it is refused.
	hdrTombstone = "Chapar-DLQ-Tombstone"
)

// NoSink is the sink of dead letters that never reached one (an invalid
// envelope).
const NoSink = "-"

// Record is one dead letter.
type Record struct {
	// Seq is the record's sequence in the dead-letter stream (0 until written).
	Seq          uint64         `json:"seq"`
	Sink         string         `json:"sink"`
	Reason       outcome.Reason `json:"reason"`
	Status       int            `json:"status,omitempty"`
	Code         string         `json:"code,omitempty"`
	Attempts     int            `json:"attempts"`
	FirstAttempt time.Time      `json:"first_attempt"`
	// Received is when the event first entered the events stream. A
	// replay carries it, so an envelope without `time` is sent with the
	// time it was first received, not the replay's. Zero in records
	// written before it was kept (Requeue then uses FirstAttempt).
	Received    time.Time `json:"received,omitzero"`
	LastAttempt time.Time `json:"last_attempt"`
	Error       string    `json:"error,omitempty"`
	EventID     string    `json:"event_id,omitempty"`
	EventType   string    `json:"event_type,omitempty"`
	// Subject is where the original message was published.
	Subject string `json:"subject"`
	// Origin is the event's sequence in its events stream, with the
	// partition in the top 8 bits (topology.Origin).
	Origin  uint64 `json:"origin,omitempty"`
	Replays int    `json:"replays"`
	// Log is the delivery's attempts, across its retries and earlier
	// replays (each entry says its replay): Attempts above counts only
	// this run's, since a replay starts afresh. Empty for records written
	// before logs were kept.
	Log AttemptLog `json:"attempt_log"`
	// ReleasedBarrier says the sink delivers in order and this event held
	// back the later events of its key while it was retried: giving up on
	// it let them go on, so the vendor got them without this one.
	ReleasedBarrier bool `json:"released_barrier,omitempty"`
	// Header and Data are the original message, unchanged.
	Header nats.Header `json:"-"`
	Data   []byte      `json:"-"`
	// stored is the subject the record was read from: its own, or for a
	// record written before records had one, the sink's shared subject.
	stored string
}

// MsgID de-duplicates dead-letter writes on (event, sink, replay): a
// redelivered message dead-lettered again (after a crash between the write
// and the ack), or an invalid envelope seen by every sink, is stored once,
// while a replay that fails again is recorded again.
func (r *Record) MsgID() string {
	// The event id too: records written before origins were carried (or
	// by a tool that does not set one) must not collide on origin 0.
	return fmt.Sprintf("dlq/%d/%s/%s/r%d", r.Origin, r.EventID, r.Sink, r.Replays)
}

// Key names the record's own subject: a hash of MsgID, since an event id
// is the producer's and may hold what a subject token cannot.
func (r *Record) Key() string {
	sum := sha256.Sum256([]byte(r.MsgID()))
	return hex.EncodeToString(sum[:16])
}

// attemptHeaders are the engine's per-delivery state: a dead letter keeps
// them out of the stored copy, since a replay starts afresh.
// The receipt time is kept as a field of its own (Record.Received),
// written back by toMsg and Requeue; the queued time is this run's and a
// replay's is its own.
var attemptHeaders = []string{topology.HeaderAttempts, topology.HeaderCounted, topology.HeaderFirstAttempt,
	topology.HeaderLastStatus, topology.HeaderLastCode, topology.HeaderReplays, topology.HeaderOrigin,
	topology.HeaderAttemptLog, topology.HeaderReceived, topology.HeaderQueued}

// keepHeader says whether an original header is stored with the dead letter
// (and so travels with a replay): not JetStream's own (a Nats-Expected-*
// header would fail every replay), not Chapar's bookkeeping.
func keepHeader(k string) bool {
	if strings.HasPrefix(k, "Chapar-DLQ-") || strings.HasPrefix(k, "Nats-") {
		return false
	}
	for _, h := range attemptHeaders {
		if k == h {
			return false
		}
	}
	return true
}

func (r *Record) toMsg(subject string) *nats.Msg {
	h := nats.Header{}
	for k, v := range r.Header {
		if keepHeader(k) {
			h[k] = append([]string(nil), v...)
		}
	}
	set := func(k, v string) {
		if v != "" {
			h.Set(k, v)
		}
	}
	set(hdrSink, r.Sink)
	set(hdrReason, string(r.Reason))
	if r.Status != 0 {
		set(hdrStatus, strconv.Itoa(r.Status))
	}
	set(hdrCode, r.Code)
	set(hdrAttempts, strconv.Itoa(r.Attempts))
	set(hdrFirstAttempt, r.FirstAttempt.UTC().Format(time.RFC3339Nano))
	set(hdrLastAttempt, r.LastAttempt.UTC().Format(time.RFC3339Nano))
	set(hdrError, oneLine(r.Error))
	set(hdrEventID, r.EventID)
	set(hdrEventType, r.EventType)
	set(hdrSubject, r.Subject)
	if r.Replays > 0 {
		set(topology.HeaderReplays, strconv.Itoa(r.Replays))
	}
	if r.Origin > 0 {
		set(topology.HeaderOrigin, strconv.FormatUint(r.Origin, 10))
	}
	if !r.Received.IsZero() {
		set(topology.HeaderReceived, r.Received.UTC().Format(time.RFC3339Nano))
	}
	if r.ReleasedBarrier {
		set(hdrReleased, "true")
	}
	set(topology.HeaderAttemptLog, r.Log.Encode())
	return &nats.Msg{Subject: subject, Header: h, Data: r.Data}
}

func oneLine(s string) string {
	s = strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	if len(s) > 1024 {
		s = s[:1024]
	}
	return s
}

// fromMsg reads a record back from the dead-letter stream: nil for a
// tombstone.
func fromMsg(seq uint64, subject string, h nats.Header, data []byte) *Record {
	if h.Get(hdrTombstone) != "" {
		return nil
	}
	atoi := func(k string) int { n, _ := strconv.Atoi(h.Get(k)); return n }
	tm := func(k string) time.Time { t, _ := time.Parse(time.RFC3339Nano, h.Get(k)); return t }
	r := &Record{
		Seq:             seq,
		Sink:            h.Get(hdrSink),
		Reason:          outcome.Reason(h.Get(hdrReason)),
		Status:          atoi(hdrStatus),
		Code:            h.Get(hdrCode),
		Attempts:        atoi(hdrAttempts),
		FirstAttempt:    tm(hdrFirstAttempt),
		LastAttempt:     tm(hdrLastAttempt),
		Received:        tm(topology.HeaderReceived),
		Error:           h.Get(hdrError),
		EventID:         h.Get(hdrEventID),
		EventType:       h.Get(hdrEventType),
		Subject:         h.Get(hdrSubject),
		Replays:         atoi(topology.HeaderReplays),
		Origin:          uint64(atoi(topology.HeaderOrigin)),
		ReleasedBarrier: h.Get(hdrReleased) == "true",
		Header:          nats.Header{},
		Data:            data,
		stored:          subject,
	}
	// A log that does not parse is left out: the record's summary fields
	// above still say what happened last.
	r.Log, _ = DecodeAttemptLog(h.Get(topology.HeaderAttemptLog))
	for k, v := range h {
		if keepHeader(k) {
			r.Header[k] = v
		}
	}
	return r
}

// Writer records dead letters.
type Writer struct {
	js   jetstream.JetStream
	topo topology.Topology
}

// NewWriter writes into the topology's dead-letter stream.
func NewWriter(js jetstream.JetStream, topo topology.Topology) *Writer {
	return &Writer{js: js, topo: topo}
}

// Write stores a record and returns once JetStream confirmed it: only then
// may the caller ack the original. duplicate says the record was already
// stored (by another sink, replica or an earlier delivery of the message).
//
// The record goes to a subject of its own, written only if nothing was
// ever stored there (Nats-Expected-Last-Subject-Sequence: 0): every sink's
// consumer sees an invalid envelope or an unknown destination, and one
// lagging by more than duplicate_window must find the record's subject
// taken, not write a second that a replay would deliver again. A replayed
// or purged record leaves a tombstone there for the same reason. The
// message id stays: within the window the server answers a duplicate
// without that check.
func (w *Writer) Write(ctx context.Context, r *Record) (duplicate bool, err error) {
	if r.Sink == "" {
		r.Sink = NoSink
	}
	ack, err := w.js.PublishMsg(ctx, r.toMsg(w.topo.DeadLetterRecordSubject(r.Sink, r.Key())),
		jetstream.WithMsgID(r.MsgID()), jetstream.WithExpectLastSequencePerSubject(0))
	if isTaken(err) {
		return true, nil
	}
	if err != nil {
		return false, fmt.Errorf("dlq: write dead letter of %s for %s: %w", r.EventID, r.Sink, err)
	}
	if !ack.Duplicate {
		r.Seq = ack.Sequence
	}
	return ack.Duplicate, nil
}

// isTaken says the server refused a write because its subject's last
// sequence was not the one expected: the record (or its tombstone) is
// already there.
func isTaken(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}
