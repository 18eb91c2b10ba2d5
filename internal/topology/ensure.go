package topology

// What the layout needs on the server: the streams and each sink's
// consumers, created or updated at every start, and what they hold.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

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
		Description: "Chapar: events as producers published them, kept for streams.max_age",
		// Limits (retention.go): acks never remove an event, so routing is
		// a consumer skipping, and a wrong skip is redeliverable. An
		// existing interest-retained stream is updated in place, nothing
		// removed (TestEnsureMigratesInterestToLimitsWithoutLoss).
		Retention: eventsRetention,
		MaxAge:    t.cfg.MaxAge,
		MaxBytes:  orUnlimited(t.cfg.MaxBytes),
		// Discard new: when full (max_bytes, or the server's storage),
		// producers get an error, which they can retry, instead of the
		// oldest events vanishing, which may be some lagging sink's
		// undelivered ones. An event JetStream acknowledged stays until
		// max_age.
		Discard:    jetstream.DiscardNew,
		Duplicates: t.cfg.DuplicateWindow,
		MaxMsgSize: maxMsg,
		Storage:    storage,
		Replicas:   t.cfg.Replicas,
		// The count these streams were made for: checkPartitions tells a
		// stream of another count by it, whatever its name.
		Metadata: map[string]string{PartitionsMetadata: strconv.Itoa(t.Partitions())},
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
// an events stream of another partition count still exists. It may hold
// events published for the old count, and the names alone do not tell:
// going from 2 to 3 keeps <S>_EVENTS_0 and _1, whose keys would move while
// their events are pending. So each events stream records the count it
// was made for (PartitionsMetadata). Chapar never removes a stream: an
// operator does, once it is drained, with producers stopped
// (docs/scaling.md, "Changing the partition count").
func (t Topology) checkPartitions(ctx context.Context, js jetstream.JetStream) error {
	n := t.Partitions()
	names := js.StreamNames(ctx, jetstream.WithStreamListSubject(t.EventsSubjects()))
	type found struct {
		name   string
		count  int // 0: unknown (suffixed, made before the count was recorded)
		msgs   uint64
		stream jetstream.Stream
	}
	var all []found
	for name := range names.Name() {
		if !t.isEventsStream(name) {
			continue // another application's stream: the server names the overlap
		}
		st, err := js.Stream(ctx, name)
		if err != nil {
			return fmt.Errorf("topology: look up events stream %s: %w", name, err)
		}
		info := st.CachedInfo()
		f := found{name: name, msgs: info.State.Msgs, stream: st}
		if v, ok := info.Config.Metadata[PartitionsMetadata]; ok {
			if f.count, err = strconv.Atoi(v); err != nil || f.count < 1 {
				f.count = 0
			}
		} else if name == t.stream+"_EVENTS" {
			f.count = 1 // the one unsuffixed stream: one partition by its name
		}
		all = append(all, f)
	}
	if err := names.Err(); err != nil {
		return fmt.Errorf("topology: list events streams: %w", err)
	}
	// Streams of unknown count are this layout's only if the suffixed
	// streams are exactly its names: <S>_EVENTS_0..N-1, nothing beyond.
	want := t.EventsStreams()
	exact := n > 1 && len(all) == n
	for _, f := range all {
		exact = exact && slices.Contains(want, f.name)
	}
	var stale []string
	for _, f := range all {
		switch {
		case f.count == n && slices.Contains(want, f.name):
			continue
		case f.count == 0 && exact:
			continue
		}
		// With limits retention a stream keeps delivered events, so what
		// it holds does not say whether it is drained: its consumers'
		// pending and unacked messages do.
		var pending uint64
		consumers := f.stream.ListConsumers(ctx)
		for ci := range consumers.Info() {
			pending += ci.NumPending + uint64(ci.NumAckPending)
		}
		if err := consumers.Err(); err != nil {
			return fmt.Errorf("topology: list consumers of %s: %w", f.name, err)
		}
		held := fmt.Sprintf("%d deliveries pending, %d events kept", pending, f.msgs)
		switch {
		case f.count == 0:
			stale = append(stale, fmt.Sprintf("%s (unknown partition count, %s)", f.name, held))
		case f.count == 1:
			stale = append(stale, fmt.Sprintf("%s (1 partition, %s)", f.name, held))
		default:
			stale = append(stale, fmt.Sprintf("%s (%d partitions, %s)", f.name, f.count, held))
		}
	}
	if len(stale) == 0 {
		return nil
	}
	slices.Sort(stale)
	return fmt.Errorf("streams.partitions: is %d, but events streams of another partition count exist: %s; "+
		"run the dispatchers with the count those were published for until no delivery is pending, stop the producers, "+
		"remove them (nats stream rm <name>), then start with the new count (docs/scaling.md, \"Changing the partition count\")",
		n, strings.Join(stale, ", "))
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

// PartitionsMetadata is the events streams' metadata key recording the
// partition count they were created for.
const PartitionsMetadata = "chapar.partitions"
