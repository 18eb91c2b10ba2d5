// Package topology is Chapar's JetStream layout in one place: the streams,
// their subjects and the durable consumers every dispatcher process shares.
//
//	<P>.events.<type>        EVENTS stream (limits retention, file): what
//	                         producers publish, de-duplicated on Nats-Msg-Id =
//	                         envelope id. Consumer "sink-<sink>" per sink reads
//	                         the types its routes name (subject_filter.go), delivers
//	                         those routed to its sink and acks the rest; an
//	                         event stays for max_age, acked or not, so no ack
//	                         can lose it. One write per event.
//	<P>.events.chapar.direct.<type>
//	                         events carrying destinations, which every sink's
//	                         consumer reads (envelope.DirectSubject).
//	<P>.events.<i>.<type>    with streams.partitions N > 1, instead: N events
//	                         streams EVENTS_0..EVENTS_<N-1>, each with its own
//	                         leader, and "sink-<sink>" on each. An event's
//	                         partition is envelope.Partition of its key, so
//	                         one user's events share one stream and keep
//	                         their order.
//	<P>.retry.wait.<sink>.<key>
//	                         RETRIES stream (work queue, message schedules):
//	                         a retry waiting for its time, as a scheduled
//	                         message (ADR-51) carrying the attempt count.
//	<P>.retry.due.<sink>     where the schedule puts it when due, and where
//	                         replays go. Consumer "retry-<sink>" per sink.
//	<P>.dlq.<sink>.<key>     DLQ stream (limits): one dead letter per (event,
//	                         sink, replay), the original envelope plus why, on
//	                         a subject of its own (<key> hashes the three) that
//	                         keeps it single: a replayed or purged record
//	                         leaves a tombstone there. Records written before
//	                         share <P>.dlq.<sink>.
//
// Each sink has its own consumers, so a slow or dead vendor holds back only
// its own queue, and a retry or replay for one sink never re-sends to the
// others. A waiting retry is stored data, not an unacked delivery, so it
// never occupies a sink's max_ack_pending window. Consumers are durable and
// shared: N dispatchers split the work. The retries and dead-letter streams
// stay single whatever the partitions: they carry only the failures.
package topology

import (
	"fmt"
	"strconv"
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
	// (RFC 3339): the time a vendor is sent for an envelope without
	// `time`. Retries and replays carry it.
	HeaderReceived = "Chapar-Received"
	// HeaderQueued is when this run of the event (its first delivery, or
	// a replay) entered JetStream (RFC 3339), for publish-to-vendor
	// latency: retries carry it, a replay starts afresh.
	HeaderQueued = "Chapar-Queued"
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
	// HeaderRedelivery names the redelivery job (dispatcher sinks
	// redeliver) that re-sent an event already delivered: it travels with
	// the retries and the dead letter of that run, whose de-duplication
	// keys include it, so a redelivery is never taken for the event's
	// first delivery (or an earlier redelivery) and dropped as a
	// duplicate of it.
	HeaderRedelivery = "Chapar-Redelivery"
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

// Partitions is how many events streams the layout has (at least 1).
func (t Topology) Partitions() int { return max(t.cfg.Partitions, 1) }

// EventsStream is partition 0's events stream: the only one unless
// streams.partitions is above 1. Code that must see every event uses
// EventsStreams.
func (t Topology) EventsStream() string { return t.EventsStreamOf(0) }

// EventsStreamOf is partition i's events stream: <S>_EVENTS with one
// partition (the name every deployment had before partitions), else
// <S>_EVENTS_<i>.
func (t Topology) EventsStreamOf(i int) string {
	if t.Partitions() == 1 {
		return t.stream + "_EVENTS"
	}
	return t.stream + "_EVENTS_" + strconv.Itoa(i)
}

// EventsStreams are every partition's events stream, in partition order.
func (t Topology) EventsStreams() []string {
	out := make([]string, t.Partitions())
	for i := range out {
		out[i] = t.EventsStreamOf(i)
	}
	return out
}

// PartitionSubjects are partition i's subjects: <P>.events.> with one
// partition, else <P>.events.<i>.>.
func (t Topology) PartitionSubjects(i int) string {
	if t.Partitions() == 1 {
		return t.EventsSubjects()
	}
	return t.prefix + ".events." + strconv.Itoa(i) + ".>"
}

// Streams of the layout.
func (t Topology) RetriesStream() string      { return t.stream + "_RETRIES" }
func (t Topology) DeadLetterStream() string   { return t.stream + "_DLQ" }
func (t Topology) DeliveriesStream() string   { return t.stream + "_DELIVERIES" }
func (t Topology) MaxEnvelopeBytes() int      { return t.cfg.MaxEnvelopeBytes }
func (t Topology) EventsSubjects() string     { return t.prefix + ".events.>" }
func (t Topology) DeadLetterSubjects() string { return t.prefix + ".dlq.>" }

// EventSubject is EventSubjectFor with an empty key: for a message with
// no envelope to take a key from (malformed input, tests). With one
// partition it is the type's subject, as it always was.
func (t Topology) EventSubject(eventType string) string { return t.EventSubjectFor(eventType, "") }

// EventSubjectFor is where a producer publishes an event of the given type
// whose PartitionKey is key (envelope.PartitionSubject).
func (t Topology) EventSubjectFor(eventType, key string) string {
	n := t.Partitions()
	return envelope.PartitionSubject(t.prefix, eventType, envelope.Partition(key, n), n)
}

// SubjectOf is where the Go publisher puts env (envelope.SubjectOf): its
// type's subject in its partition, or the direct subject of its type if
// it carries destinations.
func (t Topology) SubjectOf(env *envelope.Envelope) string {
	return envelope.SubjectOf(t.prefix, env, t.Partitions())
}

// originPartitionShift puts a partition in an origin's top bits, above any
// stream sequence a stream reaches (2^56: at a million events a second,
// 2,284 years).
const originPartitionShift = 56

// maxOriginSequence is the largest sequence an origin carries beside its
// partition.
const maxOriginSequence = 1<<originPartitionShift - 1

// The partition must fit in the origin's top bits: a compile error, not a
// silent merge, if config.MaxPartitions ever grows past them.
const _ = uint8(config.MaxPartitions - 1)

// OriginOf names an event across partitions for de-duplication (retries,
// dead letters): its sequence in its events stream, with the partition in
// the top 8 bits. Sequences repeat across partition streams; origins do
// not. With one partition, and in partition 0, it is the sequence itself.
// A sequence or a partition that does not fit is an error: encoded, it
// would silently name another event.
func OriginOf(stream string, seq uint64) (uint64, error) {
	if seq > maxOriginSequence {
		return 0, fmt.Errorf("topology: origin of %s #%d: the sequence is past 2^56, where the partition bits begin", stream, seq)
	}
	i := strings.LastIndexByte(stream, '_')
	if i < 0 || !strings.HasSuffix(stream[:i], "_EVENTS") {
		return seq, nil // one partition: <S>_EVENTS, or not an events stream
	}
	p, err := strconv.ParseUint(stream[i+1:], 10, 8)
	if err != nil {
		return 0, fmt.Errorf("topology: origin of %s #%d: %q is not a partition from 0 to 255: %w", stream, seq, stream[i+1:], err)
	}
	return seq | p<<originPartitionShift, nil
}

// Origin is OriginOf for a dispatcher's own deliveries, where a failure is
// a broken invariant (streams.partitions is at most config.MaxPartitions,
// and no stream reaches 2^56 messages): it panics rather than let two
// events share an origin and overwrite each other's retries.
func Origin(stream string, seq uint64) uint64 {
	o, err := OriginOf(stream, seq)
	if err != nil {
		panic(err)
	}
	return o
}

// SplitOrigin is Origin backwards: the partition and the sequence in its
// stream.
func SplitOrigin(origin uint64) (partition int, seq uint64) {
	return int(origin >> originPartitionShift), origin & (1<<originPartitionShift - 1)
}

// Prefix is the subject prefix.
func (t Topology) Prefix() string { return t.prefix }

// RetryWaitSubject holds one scheduled retry until it is due. key makes it
// unique per (event, sink, replay, attempt), and must for every retry,
// origin or not (dispatch's retryKey): the scheduler keeps one schedule
// per subject, so writing the same retry twice stores it once, and two
// retries under one key would lose one.
func (t Topology) RetryWaitSubject(sink, key string) string {
	return t.prefix + ".retry.wait." + sink + "." + key
}

// RetryWaitSubjects match every scheduled retry of a sink still waiting
// for its time.
func (t Topology) RetryWaitSubjects(sink string) string {
	return t.prefix + ".retry.wait." + sink + ".>"
}

// RetryDueSubject is where a sink's due retries and replays arrive.
func (t Topology) RetryDueSubject(sink string) string { return t.prefix + ".retry.due." + sink }

// DeadLetterSubject carried one sink's dead letters ("-" for envelopes that
// never reached a sink) before each record had a subject of its own: a
// deployment's older records are still stored there.
func (t Topology) DeadLetterSubject(sink string) string { return t.prefix + ".dlq." + sink }

// DeadLetterRecordSubject is one dead letter's own subject, key naming its
// (event, sink, replay). The server refuses a second message on it
// (dlq.Writer), so a record is stored once however late a second writer
// comes, beyond any duplicate window.
func (t Topology) DeadLetterRecordSubject(sink, key string) string {
	return t.DeadLetterSubject(sink) + "." + key
}

// DeadLetterSinkSubjects are every subject holding one sink's dead letters:
// the older shared subject and the per-record ones.
func (t Topology) DeadLetterSinkSubjects(sink string) []string {
	return []string{t.DeadLetterSubject(sink), t.DeadLetterSubject(sink) + ".>"}
}

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
	// Start is where a sink's events consumers begin when they are
	// created (sinks[].start): zero for the events published from then
	// on, else the first event stored at or after it. It does not apply
	// to a consumer that exists.
	Start time.Time
	// Fence is the binding replica's fingerprint of what decides a skip
	// (dispatch.Fingerprint), written into the events consumers'
	// metadata: the last replica to bind owns the sink.
	Fence string
	// Filter is which events the events consumers read (FilterSubjects),
	// written in the same update as Fence: the zero value reads the
	// whole stream.
	Filter EventFilter
	// Lead marks the sink the deployment's lead (LeadMetadata), in the
	// same update as Fence and Filter. Never unmarked here: a bind
	// without Lead leaves a mark it finds (Leads decides who leads).
	Lead bool
	// Leads are the binding config's leads, recorded on an events
	// consumer this call creates (CreatedWithMetadata): a lead that took
	// over from an old one vouches for a sink added later only if it ran
	// in the config that created the sink (WidenTakeovers).
	Leads []string
	// Floors, if set, is the floors bucket (EnsureFloors): an events
	// consumer found missing is recreated from its recorded floor
	// (restoreLost), and each one bound has its floor recorded.
	Floors jetstream.KeyValue
	// FloorsUnavailable, if set, is why the floors bucket could not be
	// made or updated. With Floors nil as well, an events consumer found
	// missing is not created (its floor cannot be read), and EnsureSink
	// returns this error wrapped, for the caller to try again.
	FloorsUnavailable error
	// Lost, if set, is told of each events consumer found missing and
	// recreated (Restored), for the caller to log and count: as soon as
	// the loss is established, before any request that would hide it
	// from a call made again (a call cut short after that request, even
	// one whose answer comes too late, leaves nothing to find).
	Lost func(Restored)
}

// FenceMetadata is the events consumers' metadata key holding the fence
// of the config that owns the sink.
const FenceMetadata = "chapar.fence"

// LeadMetadata is the events consumers' metadata key marking the sink a
// lead: its consumers read every subject, and the dispatchers running it
// count what is received and unrouted (dispatch's lead). Set once, by
// the first bind that finds none of its sinks marked, and kept while the
// sink exists, whatever the order of the sinks in a config (Leads).
const LeadMetadata = "chapar.lead"

// OrderGroup is the priority group an ordered sink's replicas pull in.
const OrderGroup = "order"

// Schedule marks a message for the retries stream to deliver to target at
// the given time (ADR-51 message schedules). The time is written to the
// nanosecond: nats.go's WithScheduleAt truncates to the second, which
// would fire up to a second early, before a vendor's Retry-After.
func Schedule(h nats.Header, at time.Time, target string) {
	h.Set(jetstream.ScheduleHeader, "@at "+at.UTC().Format(time.RFC3339Nano))
	h.Set(jetstream.ScheduleTargetHeader, target)
}

// StreamPrefix names the streams (CHAPAR for subject prefix chapar); state
// a component keeps beside them (a key-value bucket) is named
// <StreamPrefix>_<name>.
func (t Topology) StreamPrefix() string { return t.stream }
