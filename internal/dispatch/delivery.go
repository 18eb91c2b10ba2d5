package dispatch

import (
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// delivery is one message in hand for one sink, with what its headers say
// of its history. Attempts are Chapar's own count, carried in headers: a
// JetStream redelivery (a crash, a hand-back, an open breaker) is not an
// attempt.
type delivery struct {
	msg jetstream.Msg
	// retry says the message came from the sink's retry consumer: a due
	// retry or a replay, meant for this sink alone.
	retry  bool
	origin uint64 // the event's sequence in the events stream
	// seq is the message's own sequence in the stream it came from (the
	// retries stream for a retry): it names a retry when origin cannot.
	seq      uint64
	received time.Time // when the event entered the events stream
	// queued is when this run (the event, or its replay) entered
	// JetStream: delivery latency counts from it, so a replay of a
	// week-old dead letter is not a week of latency.
	queued time.Time
	// pending is how many messages the consumer had pending behind this
	// one when it handed it over (NumPending): a keyed batcher's cue that
	// a backlog began or ended (batch_keyed.go).
	pending uint64
	replays int
	history History
	// log is the attempts' own record (time, status, code, error), for
	// the dead letter; Decide reads only history.
	log dlq.AttemptLog
	// span is the last attempt's span, linked from the next: nil unless
	// it is valid (tracing on), as a delivery a keyed batcher holds
	// weighs on how much it may hold (issue 20).
	span *trace.SpanContext
	// out is what an attempt hands the sink (attempt): kept here, not
	// made per attempt, as the delivery outlives each of them.
	out sinks.Delivery
	// firstLog holds the log's first attempt (logAttempt): most events
	// have one, and its own slice was an allocation per event. A second
	// attempt's append moves the log out; nothing writes here again.
	firstLog [1]dlq.Attempt
}

func newDelivery(msg jetstream.Msg, meta *jetstream.MsgMetadata, retry bool) *delivery {
	h := msg.Headers()
	d := &delivery{msg: msg, retry: retry, received: meta.Timestamp, queued: meta.Timestamp, seq: meta.Sequence.Stream, pending: meta.NumPending}
	if !retry {
		// First sight of the event: it has no history yet.
		d.origin = topology.Origin(meta.Stream, meta.Sequence.Stream)
		return d
	}
	d.origin, _ = strconv.ParseUint(h.Get(topology.HeaderOrigin), 10, 64)
	if t, err := time.Parse(time.RFC3339Nano, h.Get(topology.HeaderReceived)); err == nil {
		d.received = t
	}
	// A replay has no queued time of its own yet: it was queued when the
	// replay entered the retries stream (meta.Timestamp).
	if t, err := time.Parse(time.RFC3339Nano, h.Get(topology.HeaderQueued)); err == nil {
		d.queued = t
	}
	d.replays, _ = strconv.Atoi(h.Get(topology.HeaderReplays))
	d.history.Attempts, _ = strconv.Atoi(h.Get(topology.HeaderAttempts))
	d.history.Counted, _ = strconv.Atoi(h.Get(topology.HeaderCounted))
	if t, err := time.Parse(time.RFC3339Nano, h.Get(topology.HeaderFirstAttempt)); err == nil {
		d.history.First = t
	}
	// Best effort: a missing or malformed log starts empty, the delivery
	// goes on.
	d.log, _ = dlq.DecodeAttemptLog(h.Get(topology.HeaderAttemptLog))
	return d
}

// setSpan keeps sc as the delivery's last span, if it is valid.
func (d *delivery) setSpan(sc trace.SpanContext) {
	if !sc.IsValid() {
		d.span = nil
		return
	}
	d.span = &sc
}

// lastSpan is the last attempt's span, if any (else invalid).
func (d *delivery) lastSpan() trace.SpanContext {
	if d.span == nil {
		return trace.SpanContext{}
	}
	return *d.span
}

// logAttempt records one vendor request that started at start and ended
// now with err, for the dead letter if it comes to that.
func (d *delivery) logAttempt(start time.Time, err error) {
	a := dlq.Attempt{At: start.UTC(), Replay: d.replays, LatencyMS: time.Since(start).Milliseconds()}
	if err != nil {
		a.Status, a.Code = statusCode(err)
		a.Error = err.Error() // clipped by Add
	}
	if d.log.Attempts == nil {
		d.log.Attempts = d.firstLog[:0]
	}
	d.log.Add(a)
}

// retryKey names the next retry of this delivery uniquely: the scheduler
// keeps one schedule per subject, so a retry written twice (after a lost
// ack) is stored once, and two retries under one name would lose one.
//
// A message without an origin (the replay of a dead letter written before
// origins were carried, or by a tool) is named by its own sequence in the
// retries stream instead, prefixed so it cannot meet an origin's name:
// that sequence is unique to the message and the same on its redelivery,
// which keeps both properties. Its retry, once due, is a new message with
// a sequence of its own, so each hop of the chain is named apart too.
func (d *delivery) retryKey() string {
	id := strconv.FormatUint(d.origin, 10)
	if d.origin == 0 {
		id = "s" + strconv.FormatUint(d.seq, 10)
	}
	key := id + "-" + strconv.Itoa(d.replays) + "-" + strconv.Itoa(d.history.Attempts)
	if job := d.redelivery(); job != "" {
		// A redelivery's retries are its own, apart from any of the
		// event's first delivery still waiting.
		key += "-d" + job
	}
	return key
}

// redelivery is the redelivery job that sent this run of the event, if
// any (topology.HeaderRedelivery): only a token a subject can hold, since
// retryKey puts it in one.
func (d *delivery) redelivery() string {
	if !d.retry {
		return ""
	}
	job := d.msg.Headers().Get(topology.HeaderRedelivery)
	if !envelope.IsSinkName(job) {
		return ""
	}
	return job
}

// retryMsg is the copy that carries the event to its next attempt: the
// producer's headers (ce-* in binary mode, traceparent, ...) and body, and
// Chapar's history. JetStream's own headers are dropped: a producer's
// Nats-Expected-* would fail the copy every time.
func (d *delivery) retryMsg(subject string, v Verdict, last error) *nats.Msg {
	out := nats.NewMsg(subject)
	for k, vals := range d.msg.Headers() {
		if strings.HasPrefix(k, "Nats-") || strings.HasPrefix(k, "Chapar-") {
			continue
		}
		out.Header[k] = vals
	}
	out.Header.Set(topology.HeaderOrigin, strconv.FormatUint(d.origin, 10))
	out.Header.Set(topology.HeaderReceived, d.received.UTC().Format(time.RFC3339Nano))
	out.Header.Set(topology.HeaderQueued, d.queued.UTC().Format(time.RFC3339Nano))
	out.Header.Set(topology.HeaderAttempts, strconv.Itoa(d.history.Attempts))
	out.Header.Set(topology.HeaderCounted, strconv.Itoa(v.Counted))
	out.Header.Set(topology.HeaderFirstAttempt, d.history.First.UTC().Format(time.RFC3339Nano))
	if d.replays > 0 {
		out.Header.Set(topology.HeaderReplays, strconv.Itoa(d.replays))
	}
	if job := d.redelivery(); job != "" {
		out.Header.Set(topology.HeaderRedelivery, job)
	}
	if link := traceLink(d.lastSpan()); link != "" {
		out.Header.Set(topology.HeaderTraceLink, link)
	}
	if log := d.log.Encode(); log != "" {
		out.Header.Set(topology.HeaderAttemptLog, log)
	}
	if status, code := statusCode(last); status != 0 {
		out.Header.Set(topology.HeaderLastStatus, strconv.Itoa(status))
		if code != "" {
			out.Header.Set(topology.HeaderLastCode, code)
		}
	}
	out.Data = d.msg.Data()
	return out
}

// statusCode is the HTTP status and vendor code of a delivery error.
func statusCode(err error) (int, string) {
	if err == nil {
		return 0, "" // before se: errors.As makes it escape, an allocation per call
	}
	var se *sinks.Error
	if errors.As(err, &se) {
		return se.Status, se.Code
	}
	return 0, ""
}
