// Package topology is Chapar's JetStream layout in one place: the streams,
// their subjects and the durable consumers every dispatcher process shares.
//
//	<P>.events.<type>        EVENTS stream (interest retention, file): what
//	                         producers publish, de-duplicated on Nats-Msg-Id =
//	                         envelope id. Consumer "sink-<sink>" per sink reads
//	                         every event, delivers those routed to its sink and
//	                         acks the rest; an event leaves the stream once
//	                         every sink has acked it. One write per event.
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
//	<P>.dlq.<sink>           DLQ stream (limits): one dead letter per (event,
//	                         sink), the original envelope plus why.
//
// Each sink has its own consumers, so a slow or dead vendor holds back only
// its own queue, and a retry or replay for one sink never re-sends to the
// others. A waiting retry is stored data, not an unacked delivery, so it
// never occupies a sink's max_ack_pending window. Consumers are durable and
// shared: N dispatchers split the work. The retries and dead-letter streams
// stay single whatever the partitions: they carry only the failures.
package topology

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
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

// originPartitionShift puts a partition in an origin's top bits, above any
// stream sequence a stream reaches (2^56).
const originPartitionShift = 56

// Origin names an event across partitions for de-duplication (retries,
// dead letters): its sequence in its events stream, with the partition in
// the top 8 bits. Sequences repeat across partition streams; origins do
// not. With one partition, and in partition 0, it is the sequence itself.
func Origin(stream string, seq uint64) uint64 {
	i := strings.LastIndexByte(stream, '_')
	if i < 0 || !strings.HasSuffix(stream[:i], "_EVENTS") {
		return seq
	}
	p, err := strconv.ParseUint(stream[i+1:], 10, 8)
	if err != nil {
		return seq
	}
	return seq | p<<originPartitionShift
}

// SplitOrigin is Origin backwards: the partition and the sequence in its
// stream.
func SplitOrigin(origin uint64) (partition int, seq uint64) {
	return int(origin >> originPartitionShift), origin & (1<<originPartitionShift - 1)
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
	if err := t.checkPartitions(ctx, js); err != nil {
		return err
	}
	maxMsg := int32(t.cfg.MaxEnvelopeBytes + HeaderAllowance)
	events := jetstream.StreamConfig{
		Description: "Chapar: events as producers published them, until every sink has them",
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
	}
	var streams []jetstream.StreamConfig
	for i := range t.Partitions() {
		sc := events
		sc.Name, sc.Subjects = t.EventsStreamOf(i), []string{t.PartitionSubjects(i)}
		streams = append(streams, sc)
	}
	streams = append(streams, jetstream.StreamConfig{
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
	}, jetstream.StreamConfig{
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
	})
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("topology: stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// SpreadLeaders moves each partition's leaders (its stream's, and the
// given sinks' consumers' on it) onto one server, a different one per
// partition as far as the servers go. Partitions exist to have several
// leaders, but JetStream picks each new stream's and consumer's leader at
// random among its replicas: three partitions on three servers share a
// stream leader two times in three. Partition i belongs on the i-th of its
// servers in name order: every dispatcher computes the same, so concurrent
// starts agree, and what is already there is left alone. Nothing to do
// with one partition or one replica. A leader that does not move (its
// server is catching up, or offline) is not an error: the layout works,
// only less spread, and the next start tries again.
func (t Topology) SpreadLeaders(ctx context.Context, js jetstream.JetStream, sinks []string) error {
	if t.Partitions() == 1 || t.cfg.Replicas == 1 {
		return nil
	}
	// A group between leaders answers nothing, not even its info: bound
	// each request, so one such group cannot hold the start up.
	bounded := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 5*time.Second) }
	var errs []error
	for i, name := range t.EventsStreams() {
		rctx, cancel := bounded()
		st, err := js.Stream(rctx, name)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("topology: stream %s: %w", name, err))
			continue
		}
		sc := st.CachedInfo().Cluster
		want, ok := pick(sc, i)
		if !ok {
			continue
		}
		if sc.Leader != want && isCurrent(sc, want) {
			if err := stepDown(ctx, js, "$JS.API.STREAM.LEADER.STEPDOWN."+name, want); err != nil {
				errs = append(errs, fmt.Errorf("topology: move the leader of %s to %s: %w", name, want, err))
			}
		}
		for _, sink := range sinks {
			rctx, cancel := bounded()
			c, err := js.Consumer(rctx, name, SinkConsumer(sink))
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("topology: consumer %s on %s: %w", SinkConsumer(sink), name, err))
				continue
			}
			if cl := c.CachedInfo().Cluster; cl != nil && cl.Leader != want && isCurrent(cl, want) {
				if err := stepDown(ctx, js, "$JS.API.CONSUMER.LEADER.STEPDOWN."+name+"."+SinkConsumer(sink), want); err != nil {
					errs = append(errs, fmt.Errorf("topology: move the leader of %s on %s to %s: %w", SinkConsumer(sink), name, want, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// pick is where partition i's leaders belong among its stream's servers
// (false: the stream has no leader yet, so nothing is known).
func pick(c *jetstream.ClusterInfo, i int) (string, bool) {
	if c == nil || c.Leader == "" {
		return "", false
	}
	servers := []string{c.Leader}
	for _, r := range c.Replicas {
		servers = append(servers, r.Name)
	}
	slices.Sort(servers)
	return servers[i%len(servers)], true
}

// isCurrent says whether server is the group's leader or an up-to-date,
// online replica of it: a server that can take over.
func isCurrent(c *jetstream.ClusterInfo, server string) bool {
	if c.Leader == server {
		return true
	}
	for _, r := range c.Replicas {
		if r.Name == server {
			return r.Current && !r.Offline
		}
	}
	return false
}

// stepDown asks a stream's or consumer's leader (api is the step-down
// subject) to hand over to the server named preferred (nats-server 2.11
// and later).
func stepDown(ctx context.Context, js jetstream.JetStream, api, preferred string) error {
	body := fmt.Sprintf(`{"placement":{"preferred":%q}}`, preferred)
	// A group between leaders does not answer: bound the wait.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msg, err := js.Conn().RequestWithContext(ctx, api, []byte(body))
	if err != nil {
		return err
	}
	var resp struct {
		Success bool                `json:"success"`
		Error   *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("step-down answer %q: %w", msg.Data, err)
	}
	if resp.Error != nil {
		if strings.Contains(resp.Error.Description, "already leader") {
			return nil // another dispatcher moved it first
		}
		return resp.Error
	}
	return nil
}

// SinkConsumers are a sink's durable consumers: one per partition's
// events stream, and its retries.
type SinkConsumers struct {
	Events  []jetstream.Consumer // in partition order
	Retries jetstream.Consumer
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
	for i, stream := range t.EventsStreams() {
		ev.FilterSubject = t.PartitionSubjects(i)
		c, err := createOrKeep(ctx, js, stream, ev)
		if err != nil {
			return out, fmt.Errorf("topology: consumer %s on %s: %w", ev.Durable, stream, err)
		}
		out.Events = append(out.Events, c)
	}
	var err error
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
		var cs [][2]string
		for _, stream := range t.EventsStreams() {
			cs = append(cs, [2]string{stream, SinkConsumer(s)})
		}
		for _, c := range append(cs, [2]string{t.RetriesStream(), RetryConsumer(s)}) {
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

// checkPartitions refuses a layout change that could lose events or order:
// an events stream of another partition count (another N, or the single
// stream of N = 1) still exists. It may hold events published for the old
// count, and its subjects overlap the new streams'. Chapar never removes
// it: an operator does, once it is drained, with producers stopped
// (docs/scaling.md, "Changing the partition count").
func (t Topology) checkPartitions(ctx context.Context, js jetstream.JetStream) error {
	want := t.EventsStreams()
	names := js.StreamNames(ctx, jetstream.WithStreamListSubject(t.EventsSubjects()))
	var stale []string
	for name := range names.Name() {
		if slices.Contains(want, name) || !t.isEventsStream(name) {
			continue // another application's stream: the server names the overlap
		}
		desc := name
		if st, err := js.Stream(ctx, name); err == nil {
			desc = fmt.Sprintf("%s (%d events)", name, st.CachedInfo().State.Msgs)
		}
		stale = append(stale, desc)
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("topology: list events streams: %w", err)
	}
	if len(stale) == 0 {
		return nil
	}
	slices.Sort(stale)
	return fmt.Errorf("streams.partitions: is %d, but events streams of another partition count exist: %s; "+
		"run the dispatchers with the count those were published for until every sink is idle, stop the producers, "+
		"remove them (nats stream rm <name>), then start with the new count (docs/scaling.md, \"Changing the partition count\")",
		t.Partitions(), strings.Join(stale, ", "))
}

// isEventsStream says whether name is an events stream of this prefix for
// some partition count: <S>_EVENTS or <S>_EVENTS_<i>.
func (t Topology) isEventsStream(name string) bool {
	rest, ok := strings.CutPrefix(name, t.stream+"_EVENTS")
	if !ok {
		return false
	}
	if rest == "" {
		return true
	}
	i, ok := strings.CutPrefix(rest, "_")
	_, err := strconv.ParseUint(i, 10, 8)
	return ok && err == nil
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
