// Package topology is Chapar's JetStream layout in one place: the streams,
// their subjects and the durable consumers every dispatcher process shares.
//
//	<P>.events.<type>        EVENTS stream (interest retention, file): what
//	                         producers publish, de-duplicated on Nats-Msg-Id =
//	                         envelope id. Consumer "sink-<sink>" per sink reads
//	                         every event, delivers those routed to its sink and
//	                         acks the rest; an event leaves the stream once
//	                         every sink has acked it. One write per event.
//	<P>.retry.wait.<sink>.<key>
//	                         RETRIES stream (work queue, message schedules):
//	                         a retry waiting for its time, as a scheduled
//	                         message (ADR-51) carrying the attempt count.
//	<P>.retry.due.<sink>     where the schedule puts it when due, and where
//	                         replays go. Consumer "retry-<sink>" per sink.
//	<P>.dlq.<sink>           DLQ stream (limits): one dead letter per (event,
//	                         sink), the original envelope plus why.
//
// Each sink has its own consumers, so a slow or dead vendor holds back only
// its own queue, and a retry or replay for one sink never re-sends to the
// others. A waiting retry is stored data, not an unacked delivery, so it
// never occupies a sink's max_ack_pending window. Consumers are durable and
// shared: N dispatchers split the work.
package topology

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Header names Chapar adds to the messages it moves. They travel with a
// retry or a replay, so an event's history is the message's own.
const (
	// HeaderOrigin is the event's sequence in the events stream: with the
	// sink and the replay count it names one delivery for de-duplication.
	HeaderOrigin = "Chapar-Origin"
	// HeaderReceived is when the event entered the events stream
	// (RFC 3339), for publish-to-vendor latency.
	HeaderReceived = "Chapar-Received"
	// HeaderAttempts counts vendor requests made for (event, sink).
	HeaderAttempts = "Chapar-Attempts"
	// HeaderCounted counts the failures charged to the event against
	// max_attempts (not throttling, not a vendor outage).
	HeaderCounted = "Chapar-Counted"
	// HeaderFirstAttempt is when the first vendor request was made.
	HeaderFirstAttempt = "Chapar-First-Attempt"
	// HeaderLastStatus and HeaderLastCode describe the last failed attempt.
	HeaderLastStatus = "Chapar-Last-Status"
	HeaderLastCode   = "Chapar-Last-Code"
	// HeaderReplays counts how many times a dead letter was replayed.
	HeaderReplays = "Chapar-Replays"
	// HeaderTraceLink is the traceparent of the attempt before, so the
	// next attempt's span links to it.
	HeaderTraceLink = "Chapar-Trace-Link"
	// HeaderAttemptLog is the delivery's last attempts (time, status,
	// vendor code, error, latency, replay) and their total, as compact
	// JSON (dlq.AttemptLog): it continues across retries and replays, so
	// a dead letter shows every attempt, not only the last.
	HeaderAttemptLog = "Chapar-Attempt-Log"
)

// HeaderAllowance is room for headers on top of the envelope's own bytes:
// streams accept that much more, and the server's max_payload must too.
const HeaderAllowance = 16 << 10

// Topology names the streams and subjects under one subject prefix.
type Topology struct {
	prefix string
	stream string // stream name prefix, e.g. CHAPAR
	cfg    config.Streams
}

// New derives the layout from the streams config.
func New(cfg config.Streams) Topology {
	return Topology{
		prefix: cfg.SubjectPrefix,
		stream: strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(cfg.SubjectPrefix)),
		cfg:    cfg,
	}
}

// Streams of the layout.
func (t Topology) EventsStream() string       { return t.stream + "_EVENTS" }
func (t Topology) RetriesStream() string      { return t.stream + "_RETRIES" }
func (t Topology) DeadLetterStream() string   { return t.stream + "_DLQ" }
func (t Topology) MaxEnvelopeBytes() int      { return t.cfg.MaxEnvelopeBytes }
func (t Topology) EventsSubjects() string     { return t.prefix + ".events.>" }
func (t Topology) DeadLetterSubjects() string { return t.prefix + ".dlq.>" }

// EventSubject is where a producer publishes an event of the given type.
func (t Topology) EventSubject(eventType string) string {
	return envelope.Subject(t.prefix, eventType)
}

// Prefix is the subject prefix.
func (t Topology) Prefix() string { return t.prefix }

// RetryWaitSubject holds one scheduled retry until it is due. key makes it
// unique per (event, sink, replay, attempt): the scheduler keeps one
// schedule per subject, so writing the same retry twice stores it once.
func (t Topology) RetryWaitSubject(sink, key string) string {
	return t.prefix + ".retry.wait." + sink + "." + key
}

// RetryDueSubject is where a sink's due retries and replays arrive.
func (t Topology) RetryDueSubject(sink string) string { return t.prefix + ".retry.due." + sink }

// DeadLetterSubject carries one sink's dead letters ("-" for envelopes that
// never reached a sink).
func (t Topology) DeadLetterSubject(sink string) string { return t.prefix + ".dlq." + sink }

// SinkConsumer is a sink's durable consumer on the events stream.
func SinkConsumer(sink string) string { return "sink-" + sink }

// RetryConsumer is a sink's durable consumer of due retries and replays.
func RetryConsumer(sink string) string { return "retry-" + sink }

// ConsumerSettings tune a sink's durable consumers.
type ConsumerSettings struct {
	AckWait       time.Duration
	MaxAckPending int
	// PinnedTTL, when positive, makes the events consumer a pinned
	// priority group (OrderGroup): the server hands its messages to one
	// client at a time and moves to another once that one has not pulled
	// for PinnedTTL. An ordered sink needs this: one replica at a time
	// holds a key's events. Zero: every replica pulls its share.
	PinnedTTL time.Duration
}

// OrderGroup is the priority group an ordered sink's replicas pull in.
const OrderGroup = "order"

// Ensure creates or updates the three streams. It is idempotent, so every
// dispatcher runs it at start.
func (t Topology) Ensure(ctx context.Context, js jetstream.JetStream) error {
	storage := jetstream.FileStorage
	if t.cfg.Storage == "memory" {
		storage = jetstream.MemoryStorage
	}
	maxMsg := int32(t.cfg.MaxEnvelopeBytes + HeaderAllowance)
	streams := []jetstream.StreamConfig{{
		Name:        t.EventsStream(),
		Description: "Chapar: events as producers published them, until every sink has them",
		Subjects:    []string{t.EventsSubjects()},
		// Interest: an event leaves once every sink's consumer acked it,
		// so routing is a consumer skipping, not a copy per sink.
		Retention: jetstream.InterestPolicy,
		MaxAge:    t.cfg.MaxAge,
		MaxBytes:  orUnlimited(t.cfg.MaxBytes),
		// Discard new: when full, producers get an error instead of the
		// oldest undelivered events silently vanishing.
		Discard:    jetstream.DiscardNew,
		Duplicates: t.cfg.DuplicateWindow,
		MaxMsgSize: maxMsg,
		Storage:    storage,
		Replicas:   t.cfg.Replicas,
	}, {
		Name:        t.RetriesStream(),
		Description: "Chapar: retries waiting for their time, and replays",
		Subjects:    []string{t.prefix + ".retry.>"},
		Retention:   jetstream.WorkQueuePolicy,
		// Message schedules cannot use discard new; the stream has no
		// limits, so nothing is ever discarded.
		Discard:           jetstream.DiscardOld,
		AllowMsgSchedules: true,
		AllowRollup:       true,
		Duplicates:        t.cfg.DuplicateWindow,
		MaxMsgSize:        maxMsg + HeaderAllowance,
		Storage:           storage,
		Replicas:          t.cfg.Replicas,
	}, {
		Name:        t.DeadLetterStream(),
		Description: "Chapar: dead letters, the original envelope plus why",
		Subjects:    []string{t.DeadLetterSubjects()},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      t.cfg.DeadLetterMaxAge,
		Discard:     jetstream.DiscardNew,
		Duplicates:  t.cfg.DuplicateWindow,
		MaxMsgSize:  maxMsg + HeaderAllowance,
		Storage:     storage,
		Replicas:    t.cfg.Replicas,
	}}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("topology: stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// SinkConsumers are a sink's two durable consumers.
type SinkConsumers struct {
	Events, Retries jetstream.Consumer
}

// EnsureSink creates or updates a sink's durable consumers.
func (t Topology) EnsureSink(ctx context.Context, js jetstream.JetStream, sink string, s ConsumerSettings) (SinkConsumers, error) {
	base := jetstream.ConsumerConfig{
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.AckWait,
		MaxAckPending: s.MaxAckPending,
		// Chapar counts vendor attempts itself (HeaderAttempts); JetStream
		// redeliveries (a crash, a hand-back at shutdown, an open breaker)
		// are not attempts and must never exhaust an event.
		MaxDeliver: -1,
		Replicas:   t.cfg.Replicas,
	}
	ev := base
	ev.Durable = SinkConsumer(sink)
	ev.Description = "Chapar: events for sink " + sink
	ev.FilterSubject = t.EventsSubjects()
	// A sink added to a running deployment starts with new events; older
	// ones that named it were dead-lettered as unknown_destination and can
	// be replayed to it.
	ev.DeliverPolicy = jetstream.DeliverNewPolicy
	if s.PinnedTTL > 0 {
		ev.PriorityPolicy = jetstream.PriorityPolicyPinned
		ev.PriorityGroups = []string{OrderGroup}
		ev.PinnedTTL = s.PinnedTTL
	}
	var out SinkConsumers
	var err error
	if out.Events, err = createOrKeep(ctx, js, t.EventsStream(), ev); err != nil {
		return out, fmt.Errorf("topology: consumer %s: %w", ev.Durable, err)
	}
	rt := base
	rt.Durable = RetryConsumer(sink)
	rt.Description = "Chapar: due retries and replays for sink " + sink
	rt.FilterSubject = t.RetryDueSubject(sink)
	if out.Retries, err = createOrKeep(ctx, js, t.RetriesStream(), rt); err != nil {
		return out, fmt.Errorf("topology: consumer %s: %w", rt.Durable, err)
	}
	return out, nil
}

// createOrKeep updates a consumer, keeping its deliver policy (which cannot
// change), or creates it.
func createOrKeep(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if c, err := js.Consumer(ctx, stream, cfg.Durable); err == nil {
		cfg.DeliverPolicy = c.CachedInfo().Config.DeliverPolicy
		return js.UpdateConsumer(ctx, stream, cfg)
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, err
	}
	return js.CreateOrUpdateConsumer(ctx, stream, cfg)
}

// HasSink reports whether some dispatcher has created a sink's consumer:
// the sink exists in the deployment, even if this process does not run it.
func (t Topology) HasSink(ctx context.Context, js jetstream.JetStream, sink string) (bool, error) {
	_, err := js.Consumer(ctx, t.RetriesStream(), RetryConsumer(sink))
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return false, nil
	default:
		return false, fmt.Errorf("topology: look up sink %s: %w", sink, err)
	}
}

// Idle reports whether nothing is left to do for the given sinks: no event
// pending or unacked in their consumers and no retry waiting.
func (t Topology) Idle(ctx context.Context, js jetstream.JetStream, sinks []string) (bool, error) {
	for _, s := range sinks {
		for _, c := range [][2]string{{t.EventsStream(), SinkConsumer(s)}, {t.RetriesStream(), RetryConsumer(s)}} {
			cons, err := js.Consumer(ctx, c[0], c[1])
			if err != nil {
				return false, err
			}
			info, err := cons.Info(ctx)
			if err != nil {
				return false, err
			}
			if info.NumPending > 0 || info.NumAckPending > 0 {
				return false, nil
			}
		}
	}
	st, err := js.Stream(ctx, t.RetriesStream())
	if err != nil {
		return false, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return false, err
	}
	return info.State.Msgs == 0, nil
}

func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}

// Schedule marks a message for the retries stream to deliver to target at
// the given time (ADR-51 message schedules). The time is written to the
// nanosecond: nats.go's WithScheduleAt truncates to the second, which
// would fire up to a second early, before a vendor's Retry-After.
func Schedule(h nats.Header, at time.Time, target string) {
	h.Set(jetstream.ScheduleHeader, "@at "+at.UTC().Format(time.RFC3339Nano))
	h.Set(jetstream.ScheduleTargetHeader, target)
}
