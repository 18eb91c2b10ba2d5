package topology

// What the layout needs on the server: the streams and each sink's
// consumers, created or updated at every start, and what they hold.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/deliveries"
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
		// Lookups (internal/lookup: an event by its sequence, a backlog
		// for one no sink has settled) and redeliveries (internal/redeliver:
		// a window by start time) read with direct gets, which leave no
		// consumer behind. A stream made before this is updated in place
		// at the next start (the flag is editable); until then a
		// redelivery says so.
		AllowDirect: true,
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
		// A replayed or purged record is replaced by a tombstone on its
		// own subject (a subject rollup), so a late second write of it is
		// still refused (dlq.Writer).
		AllowRollup: true,
		// Dead-letter tools and the console read it with direct gets by
		// sequence, which leave no consumer behind (dlq/read.go). A
		// stream made before this is updated in place at the next start
		// (the flag is editable); until then the tools read it one
		// message per request from its leader.
		AllowDirect: true,
		Discard:     jetstream.DiscardNew,
		Duplicates:  t.cfg.DuplicateWindow,
		MaxMsgSize:  maxMsg + HeaderAllowance,
		Storage:     storage,
		Replicas:    t.cfg.Replicas,
	})
	if t.cfg.RecordDeliveries {
		streams = append(streams, jetstream.StreamConfig{
			Name:        t.DeliveriesStream(),
			Description: "Chapar: what became of each delivery, for dispatcher events show",
			Subjects:    []string{deliveries.Subjects(t.prefix)},
			Retention:   jetstream.LimitsPolicy,
			MaxAge:      t.cfg.DeliveriesMaxAge,
			// Records are a lookup's detail, not events: when the
			// server's storage is short the oldest go first, and a
			// delivery is never refused for want of a record.
			Discard: jetstream.DiscardOld,
			// Lookups read an event's records with a direct get on its
			// bucket's subject (deliveries.Lookup): no consumer.
			AllowDirect: true,
			Storage:     storage,
			Replicas:    t.cfg.Replicas,
		})
		mode, err := t.deliveriesPersistMode(ctx, js, storage)
		if err != nil {
			return err
		}
		streams[len(streams)-1].PersistMode = mode
	}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("topology: stream %s: %w", sc.Name, err)
		}
	}
	return nil
}

// deliveriesPersistMode is how the server persists delivery records.
// Flushed in place (the default), each record was a write syscall of its
// own on the server, a quarter of its CPU while draining a backlog: a
// single file-backed copy is flushed in batches instead (AsyncPersistMode).
// What that risks, the last records written before a hard kill of
// nats-server, costs lookups their detail, never an event, as a record
// lost on the way does (deliveries.Writer). The server refuses the mode
// for replicated or memory streams, and refuses to change a stream's
// mode: a stream made before keeps its own.
func (t Topology) deliveriesPersistMode(ctx context.Context, js jetstream.JetStream, storage jetstream.StorageType) (jetstream.PersistModeType, error) {
	s, err := js.Stream(ctx, t.DeliveriesStream())
	switch {
	case err == nil:
		return s.CachedInfo().Config.PersistMode, nil
	case !errors.Is(err, jetstream.ErrStreamNotFound):
		return 0, fmt.Errorf("topology: stream %s: %w", t.DeliveriesStream(), err)
	case storage == jetstream.FileStorage && t.cfg.Replicas <= 1:
		return jetstream.AsyncPersistMode, nil
	default:
		return jetstream.DefaultPersistMode, nil
	}
}

// SinkConsumers are a sink's durable consumers: one per partition's
// events stream, and its retries.
type SinkConsumers struct {
	Events  []jetstream.Consumer // in partition order
	Retries jetstream.Consumer
	// StreamsCreated are the events streams' creation times, in
	// partition order: a floor record names its stream instance by it.
	StreamsCreated []time.Time
	// FloorsNotWritten says why floors of consumers bound here could not
	// be recorded, nil if they all were.
	FloorsNotWritten error
	// Unmarked is the removal mark (RemovingMetadata: since when) this
	// bind cleared, "" if there was none: a dispatcher runs the sink, so
	// a removal under way gives up.
	Unmarked string
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
	// Where it starts is chosen when it is created (ensureEvents).
	if s.Fence != "" || s.Lead {
		ev.Metadata = map[string]string{}
	}
	if s.Fence != "" {
		ev.Metadata[FenceMetadata] = s.Fence
	}
	if s.Lead {
		ev.Metadata[LeadMetadata] = "true"
	}
	if s.PinnedTTL > 0 {
		ev.PriorityPolicy = jetstream.PriorityPolicyPinned
		ev.PriorityGroups = []string{OrderGroup}
		ev.PinnedTTL = s.PinnedTTL
	}
	var out SinkConsumers
	for i, stream := range t.EventsStreams() {
		// The filter goes in the same update as the fence: the replica
		// that owns the sink reads what its routes need, whatever the
		// replica before it read (the server keeps the consumer's
		// position: events past it are read under the new filter).
		setFilter(&ev, t.FilterSubjects(i, s.Filter))
		var restored *Restored
		// Whether ensureEvents may create the consumer if it finds it
		// missing: not once a look here found it (or recreated it), for
		// one gone since was lost since, and made from new events its
		// backlog would be skipped without a word.
		mayCreate := true
		if s.Floors == nil && s.FloorsUnavailable != nil {
			mayCreate = false
			// Which floor to recreate it from cannot be read: a missing
			// consumer waits for the bucket; an existing one needs none.
			if _, err := js.Consumer(ctx, stream, ev.Durable); errors.Is(err, jetstream.ErrConsumerNotFound) {
				return out, fmt.Errorf("topology: consumer %s on %s is missing and the floors bucket to recreate it from is unavailable: %w",
					ev.Durable, stream, s.FloorsUnavailable)
			} else if err != nil {
				return out, fmt.Errorf("topology: consumer %s on %s: %w", ev.Durable, stream, err)
			}
		}
		if s.Floors != nil {
			var err error
			if restored, mayCreate, err = restoreLost(ctx, js, t, s.Floors, sink, stream, ev, s.Start); err != nil {
				return out, fmt.Errorf("topology: consumer %s on %s: %w", ev.Durable, stream, err)
			}
			if restored != nil && restored.Plan != LostFromStart && s.Lost != nil {
				// Recreated: reported now, whatever fails next, since
				// a call made again finds it in place.
				if claimLoss(ctx, s.Floors, sink, *restored) {
					s.Lost(*restored)
				}
			}
		}
		// Who made the sink is recorded only for a new one: one recreated
		// after a loss (by sinks[].start here) may have been made by
		// another config, before.
		createdWith := ""
		if restored == nil {
			createdWith = strings.Join(slices.Sorted(slices.Values(s.Leads)), ",")
		}
		create := ev
		var report func(c *jetstream.ConsumerInfo, start uint64)
		if restored != nil {
			// Reported above: the mark its recreation carries is
			// cleared (keep).
			report = func(*jetstream.ConsumerInfo, uint64) {}
		}
		if restored != nil && restored.Plan == LostFromStart {
			// Created, then its start recorded by an update: a call cut
			// between the two finds it in place next time, and only
			// this mark says it was lost (restoreLost reads it). It is
			// reported before the update that clears it (report).
			create.Metadata = maps.Clone(ev.Metadata)
			if create.Metadata == nil {
				create.Metadata = map[string]string{}
			}
			create.Metadata[LostUnreportedMetadata] = "from_start"
			r := *restored
			report = func(c *jetstream.ConsumerInfo, start uint64) {
				r.StartSeq, r.From, r.Instance = start, start, c.Created // where it delivers from
				if s.Lost != nil && claimLoss(ctx, s.Floors, sink, r) {
					s.Lost(r)
				}
			}
		}
		c, mark, err := ensureEvents(ctx, js, stream, create, s.Start, createdWith, mayCreate, report)
		if err != nil {
			return out, fmt.Errorf("topology: consumer %s on %s: %w", ev.Durable, stream, err)
		}
		out.Events = append(out.Events, c)
		if mark != "" {
			out.Unmarked = mark
		}
		// The stream instance the consumer is in, read after it: what
		// its floors are positions in (read without the floors bucket
		// too: a healer's recreation checks it).
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return out, err
		}
		created := st.CachedInfo().Created
		out.StreamsCreated = append(out.StreamsCreated, created)
		if s.Floors != nil {
			// The floor is recorded before the first pull: a consumer a
			// dispatcher has bound has a floor, whatever happens next.
			start, err := StartOf(c.CachedInfo())
			if err != nil {
				return out, err
			}
			// Not fatal: a bucket that refuses writes must not keep the
			// sink from delivering; the healer writes again as it moves.
			if err := WriteFloor(ctx, s.Floors, sink, Floor{Stream: stream, StreamCreated: created,
				AckFloor: c.CachedInfo().AckFloor.Stream, StartSeq: start, Updated: time.Now().UTC(),
				Lead: s.Lead || IsLead(c.CachedInfo())}); err != nil {
				out.FloorsNotWritten = errors.Join(out.FloorsNotWritten, err)
			}
		}
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

// StartMetadata is a sink's events consumer's metadata key holding the
// first stream sequence it covers (StartOf).
const StartMetadata = "chapar.start_seq"

// startPending is how long after its creation a consumer without its
// start recorded is taken to be in the middle of EnsureSink, not one made
// before starts were recorded.
const startPending = 30 * time.Second

// ErrStartPending says a sink's events consumer was just created and its
// start is not recorded yet: ask again in a moment.
var ErrStartPending = errors.New("topology: the sink's consumer is being created")

// StartOf is the first stream sequence a sink's events consumer covers:
// an event below it was stored before the sink existed there (or before
// its start time) and is not the sink's to deliver; one at or above it
// is. It is fixed when the consumer is created and never changes. A
// consumer made before starts were recorded covers everything (0).
func StartOf(info *jetstream.ConsumerInfo) (uint64, error) {
	if v, ok := info.Config.Metadata[StartMetadata]; ok {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("topology: consumer %s: %s %q is not a sequence: %w", info.Name, StartMetadata, v, err)
		}
		return n, nil
	}
	if info.Delivered.Consumer == 0 {
		// Nothing delivered yet: the server's next sequence is the start.
		return info.Delivered.Stream + 1, nil
	}
	if !info.TimeStamp.IsZero() && info.TimeStamp.Sub(info.Created) < startPending {
		return 0, fmt.Errorf("%w: %s", ErrStartPending, info.Name)
	}
	return 0, nil
}

// LostUnreportedMetadata is a sink's events consumer's metadata key
// saying it was created after a loss and the loss may not be reported
// yet: "from_start" (created by sinks[].start), or the loss as JSON
// (Restored, recreated from its floor). Set in its creation, cleared
// after the bind reported it. A bind cut between the two, even by a
// request the server applied after the bind gave up on it, leaves it in
// place; the mark makes the next one report the loss (restoreLost).
const LostUnreportedMetadata = "chapar.lost_unreported"

// CreatedWithMetadata is a sink's events consumer's metadata key holding
// the leads of the config whose bind created it, comma-separated: fixed
// at creation, absent on one recreated after a loss (from its floor, or
// by sinks[].start) or made before it was kept.
const CreatedWithMetadata = "chapar.created_with"

// CreatedWith are the leads recorded on a sink's events consumer at its
// creation (CreatedWithMetadata).
func CreatedWith(info *jetstream.ConsumerInfo) []string {
	v := info.Config.Metadata[CreatedWithMetadata]
	if v == "" {
		return nil
	}
	return strings.Split(v, ",")
}

// ensureEvents creates a sink's events consumer on one partition's stream,
// or keeps the one that exists. A new consumer's start is chosen by the
// server at creation (new events, or the first at or after start), so it
// is exact whatever is published meanwhile: a checker that found no
// consumer after reading the stream's last sequence L knows every event
// up to L is below it. The start is then recorded in the consumer's
// metadata (StartOf), for every dispatcher to read, with createdWith, the
// creating config's leads (CreatedWithMetadata).
//
// report, if set (the caller reports a loss of this consumer), is told
// of the consumer's start before the request that clears its unreported
// loss (LostUnreportedMetadata) is sent. Unset, the mark stays.
func ensureEvents(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig, start time.Time, createdWith string, mayCreate bool, report func(*jetstream.ConsumerInfo, uint64)) (c jetstream.Consumer, unmarked string, err error) {
	if c, err := js.Consumer(ctx, stream, cfg.Durable); err == nil {
		return keep(ctx, js, stream, cfg, c, report)
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, "", err
	}
	if !mayCreate {
		return nil, "", fmt.Errorf("%w: %s on %s", ErrConsumerGone, cfg.Durable, stream)
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, "", err
	}
	floor := st.CachedInfo().State.LastSeq + 1 // read before: the start is at least this
	cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	if !start.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime, floor = jetstream.DeliverByStartTimePolicy, &start, 0
	}
	c, err = js.CreateConsumer(ctx, stream, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		// Another dispatcher created it meanwhile.
		if c, err = js.Consumer(ctx, stream, cfg.Durable); err != nil {
			return nil, "", err
		}
		return keep(ctx, js, stream, cfg, c, report)
	}
	if err != nil {
		return nil, "", err
	}
	// The creation's answer is the consumer before any delivery: its next
	// sequence is its start.
	info := c.CachedInfo()
	seq := max(info.Delivered.Stream+1, floor)
	cfg.Metadata = mergeMetadata(info.Config.Metadata, cfg.Metadata)
	cfg.Metadata[StartMetadata] = strconv.FormatUint(seq, 10)
	if report != nil {
		report(info, seq)
		delete(cfg.Metadata, LostUnreportedMetadata)
	}
	if createdWith != "" {
		cfg.Metadata[CreatedWithMetadata] = createdWith
	}
	c, err = js.UpdateConsumer(ctx, stream, cfg)
	return c, "", err
}

// ErrConsumerGone says a sink's events consumer found in place (or
// recreated) a moment before was gone when it was bound: lost since (an
// operator's delete, an R1 consumer lost with its server). It is not
// made afresh from new events, which would skip its backlog without a
// word: a call made again finds it missing, and recreates it from where
// it stood.
var ErrConsumerGone = errors.New("topology: the sink's events consumer was lost during the bind")

// mergeMetadata is the consumer's metadata as it stands (the server's own
// keys and the recorded start among them) with cfg's keys over it: an
// update that changes nothing else leaves the consumer as it was.
func mergeMetadata(have, want map[string]string) map[string]string {
	out := make(map[string]string, len(have)+len(want)+1)
	for k, v := range have {
		out[k] = v
	}
	for k, v := range want {
		out[k] = v
	}
	return out
}

// keep updates an events consumer to cfg, keeping what cannot change (its
// deliver policy and start) and its recorded start. One whose start was
// never recorded (made before starts were, or its creator stopped between
// the two steps) has it recorded now if nothing was delivered from it yet.
// A removal's mark is cleared (this dispatcher runs the sink) and returned.
// A loss not yet reported (LostUnreportedMetadata) is reported (report,
// with the start) before the update that clears it is sent; without
// report, the mark stays for a call that reports it.
func keep(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig, c jetstream.Consumer, report func(*jetstream.ConsumerInfo, uint64)) (jetstream.Consumer, string, error) {
	info := c.CachedInfo()
	cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = info.Config.DeliverPolicy, info.Config.OptStartSeq, info.Config.OptStartTime
	cfg.Metadata = mergeMetadata(info.Config.Metadata, cfg.Metadata)
	if v, ok := info.Config.Metadata[StartMetadata]; ok {
		cfg.Metadata[StartMetadata] = v // fixed at creation
	} else if info.Delivered.Consumer == 0 {
		cfg.Metadata[StartMetadata] = strconv.FormatUint(info.Delivered.Stream+1, 10)
	}
	if _, marked := info.Config.Metadata[LostUnreportedMetadata]; marked && report != nil {
		// Marked on the server (the caller's create config carries the
		// mark too, but a consumer another made meanwhile is not this
		// call's loss unless it is marked).
		start, _ := strconv.ParseUint(cfg.Metadata[StartMetadata], 10, 64) // 0: not known, "from sinks[].start"
		report(info, start)
		delete(cfg.Metadata, LostUnreportedMetadata)
	}
	var mark string
	cfg.Metadata, mark = unmarked(cfg.Metadata)
	c, err := js.UpdateConsumer(ctx, stream, cfg)
	return c, mark, err
}

// createOrKeep updates a consumer, keeping where it starts (its deliver
// policy and start sequence or time, which cannot change: a consumer
// RecreateConsumer made starts at a sequence), or creates it.
func createOrKeep(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if c, err := js.Consumer(ctx, stream, cfg.Durable); err == nil {
		was := c.CachedInfo().Config
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = was.DeliverPolicy, was.OptStartSeq, was.OptStartTime
		return js.UpdateConsumer(ctx, stream, cfg)
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, err
	}
	return js.CreateOrUpdateConsumer(ctx, stream, cfg)
}

// FenceOf reads the fence a sink's events consumer carries now: one
// request to partition 0's consumer, the fence's home (every partition's
// consumer carries the same, written by the same replica).
func FenceOf(ctx context.Context, c jetstream.Consumer) (string, error) {
	info, err := c.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("topology: read the fence: %w", err)
	}
	return info.Config.Metadata[FenceMetadata], nil
}

// RecreateConsumer puts back one durable consumer found missing (deleted by
// an operator, lost with the only server that held it), as cfg describes
// it (its config as the server had it). from is the stream sequence it is
// to start at, where the lost consumer was: its ack floor plus one, so
// nothing it had not acked is skipped (what it had acked since is
// delivered again: at-least-once); 0 keeps cfg's own start (a retries
// consumer: its work-queue stream holds only what is not yet acked).
//
// If the consumer exists again (another dispatcher recreated it first, or
// it was never gone) it is kept as it is, and created reports false: two
// replicas healing at once make one consumer, not two starts.
func RecreateConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig, from uint64) (c jetstream.Consumer, created bool, err error) {
	if c, err := js.Consumer(ctx, stream, cfg.Durable); err == nil {
		return c, false, nil
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, false, fmt.Errorf("topology: look up consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	if from > 0 {
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverByStartSequencePolicy, from, nil
	}
	// The server's own metadata (versions it stamps) is its to set again.
	cfg.Metadata = maps.Clone(cfg.Metadata)
	maps.DeleteFunc(cfg.Metadata, func(k, _ string) bool { return strings.HasPrefix(k, "_nats.") })
	// Create, not create-or-update: if another replica won the race, its
	// consumer stands and this call fails with "already exists".
	c, err = js.CreateConsumer(ctx, stream, cfg)
	if errors.Is(err, jetstream.ErrConsumerExists) {
		c, err = js.Consumer(ctx, stream, cfg.Durable)
		return c, false, err
	}
	if err != nil {
		return nil, false, fmt.Errorf("topology: recreate consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	// nats-server answers a pull with "consumer deleted" before it has
	// removed the consumer's directory: a consumer recreated at once under
	// the same name loses its directory to the old one's removal, and then
	// runs from memory, failing every later update (and a restart of the
	// server would lose it). The caller lets a loss settle first (the
	// healer waits a second); writing the config once more, with where it
	// started in its metadata, checks that it has a directory, and if not
	// it is removed (our own delete is synchronous) for the caller to try
	// again.
	cfg = c.CachedInfo().Config
	cfg.Metadata = maps.Clone(cfg.Metadata)
	if cfg.Metadata == nil {
		cfg.Metadata = map[string]string{}
	}
	cfg.Metadata[RecreatedFromMetadata] = strconv.FormatUint(from, 10)
	if c, err = js.UpdateConsumer(ctx, stream, cfg); err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			// The caller is stopping (a healer as its dispatcher stops):
			// what it made stays, unchecked, for the next start to find,
			// as before this delete had a deadline of its own (removed
			// then, heal_lead_test's stop found the consumer gone).
			return nil, false, fmt.Errorf("topology: recreated consumer %s on %s, not checked (stopping): %w", cfg.Durable, stream, err)
		}
		// Removed on a deadline of its own: ctx may be what ran out (a
		// bind's try cut short), and a consumer left in place is found
		// by the next try with nothing said of its loss (review rev18).
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if derr := js.DeleteConsumer(dctx, stream, cfg.Durable); derr != nil && !errors.Is(derr, jetstream.ErrConsumerNotFound) {
			return nil, false, fmt.Errorf("topology: recreated consumer %s on %s is not stored (%w), and removing it to try again failed: %v",
				cfg.Durable, stream, err, derr)
		}
		return nil, false, fmt.Errorf("topology: recreated consumer %s on %s is not stored; removed it to try again: %w", cfg.Durable, stream, err)
	}
	return c, true, nil
}

// RecreatedFromMetadata is a consumer's metadata key saying it was
// recreated after a loss, and from which stream sequence (0: its own
// start), until the next dispatcher start updates it.
const RecreatedFromMetadata = "chapar.recreated_from"

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
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			// Listed, but not (or no longer) there: on a forming cluster
			// a stream another dispatcher is creating at this moment is
			// listed before it can be looked up. Gone or not yet made, it
			// holds no events of another count.
			continue
		}
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
