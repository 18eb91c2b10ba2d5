package topology

// Which of a config's sinks lead: the sinks whose events consumers read
// every subject so that someone checks what no route's types cover (an
// invalid envelope, an event on a subject its sink does not read) and
// counts what is received and unrouted. The lead is recorded on the
// server (LeadMetadata), not taken from the order of a config: a config
// that puts another sink first would otherwise widen the new first sink
// at its current position and narrow the old one, and what the old one
// had not read yet, outside its own types, would be checked by no one.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// IsLead reports whether a sink's events consumer carries the lead mark.
func IsLead(info *jetstream.ConsumerInfo) bool {
	_, ok := info.Config.Metadata[LeadMetadata]
	return ok
}

// RestoreLead puts the lead mark back on a sink's events consumer that
// lacks it, reading every subject as a marked lead does, and changes
// nothing else (fence, position, settings): a healer that knew the mark
// found the consumer recreated by another replica that had not seen it
// yet. A mark is never taken off a sink's consumers (RemoveSink deletes
// them), so a mark once seen is still right; the whole stream is a
// superset of any filter, so the owner's routes, which decide exactly,
// miss nothing from the widening on.
//
// What the consumer passed over before, off its filter, is prior: the
// consumer is widened where it stands, as a bind widens a sink it makes
// the lead, and held still the same way (paused until until, resumed
// once widened) so that prior.Delivered is where it was widened. The
// caller sweeps it (a healer: dispatch's leadSweep from where the
// consumer started). prior does not exist when there was nothing to
// widen (marked already, or reading every subject).
//
// The update is a read-modify-write of the consumer's config: a bind of
// another config landing between its read and its write is overwritten
// (TestReviewRestoreLeadDoesNotRestoreAStaleFence).
func RestoreLead(ctx context.Context, js jetstream.JetStream, stream, durable string, until time.Time) (jetstream.Consumer, PriorRead, error) {
	c, err := js.Consumer(ctx, stream, durable)
	if err != nil {
		return nil, PriorRead{}, fmt.Errorf("topology: consumer %s on %s: %w", durable, stream, err)
	}
	info := c.CachedInfo()
	if IsLead(info) {
		return c, PriorRead{}, nil
	}
	// The stream's subjects are what it is widened to, as a bind widens
	// a lead (FilterSubjects): an update that clears the filter instead
	// leaves the consumer registered for no stream signal on nats-server
	// 2.15.2, so what is stored after it is neither counted in its
	// NumPending nor wakes a waiting pull
	// (TestReviewRev10RestoreLeadsWideningCountsWhatIsStoredAfterIt).
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, PriorRead{}, fmt.Errorf("topology: the subjects of %s, to widen consumer %s to: %w", stream, durable, err)
	}
	subjects := st.CachedInfo().Config.Subjects
	narrow := len(filtersOn(info.Config, subjects)) > 0
	paused := false
	if narrow && !info.Paused {
		// Held still by this call, unless held already (a bind's hold,
		// which that bind resumes).
		if _, err := js.PauseConsumer(ctx, stream, durable, until); err != nil {
			return nil, PriorRead{}, fmt.Errorf("topology: pause consumer %s on %s before it is widened: %w", durable, stream, err)
		}
		paused = true
		err := waitPaused(ctx, js, stream, durable, until)
		if err == nil {
			c, err = js.Consumer(ctx, stream, durable)
		}
		if err != nil {
			resume(ctx, js, stream, durable)
			return nil, PriorRead{}, fmt.Errorf("topology: hold consumer %s on %s before it is widened: %w", durable, stream, err)
		}
		if info = c.CachedInfo(); IsLead(info) {
			resume(ctx, js, stream, durable)
			return c, PriorRead{}, nil
		}
	}
	var prior PriorRead
	if filters := filtersOn(info.Config, subjects); len(filters) > 0 {
		// Held still, it stands at or below the stream's last event: the
		// bound reported if where it goes on from cannot be read once it
		// is widened (a bound too high judges some events it delivers as
		// passed over; one too low loses what it passed over).
		bound, err := lastSeq(ctx, js, stream)
		if err != nil {
			if paused {
				resume(ctx, js, stream, durable)
			}
			return nil, PriorRead{}, fmt.Errorf("topology: where %s stands before consumer %s is widened: %w", stream, durable, err)
		}
		prior = PriorRead{Exists: true, Filters: filters, Delivered: max(info.Delivered.Stream, bound)}
	}
	cfg := info.Config
	cfg.Metadata = mergeMetadata(cfg.Metadata, map[string]string{LeadMetadata: "true"})
	setFilter(&cfg, subjects)
	if c, err = js.UpdateConsumer(ctx, stream, cfg); err != nil {
		if paused {
			resume(ctx, js, stream, durable)
		}
		return nil, PriorRead{}, fmt.Errorf("topology: mark consumer %s on %s the lead again: %w", durable, stream, err)
	}
	if prior.Exists {
		// Widened and still held: where it goes on from, tried for about
		// 1.5 s (six tries) while ctx lasts. Unread, the bound stands: the
		// stream's end under this call's hold, or under another's, which
		// holds unless its owner resumes the consumer between the read and
		// the widening (the bound is then low: a known limit, with the
		// broker unreadable right after the widening as well).
		for wait := 50 * time.Millisecond; ; wait *= 2 {
			at, err := PassedTo(ctx, js, stream, durable)
			if err == nil {
				prior.Delivered = at
				break
			}
			if wait > time.Second || sleepCtx(ctx, wait) != nil {
				break
			}
		}
	}
	if paused {
		// Not resumed (the broker unreachable): the pause ends at until.
		resume(ctx, js, stream, durable)
	}
	return c, prior, nil
}

// PassedTo is where a consumer held still (paused) and just widened to
// every subject goes on from, less one: the last stream sequence it has
// passed. Its pulls, narrow, may have scanned past events its filter did
// not take without delivering any, which its Delivered does not show (a
// pull that found nothing leaves the server's position past what it
// scanned): widened, it does not go back for them.
//
// Read as the highest position below which the stream holds exactly what
// the consumer has pending (positionOf: every stored event above it,
// counting the interior deletes): the stream, the consumer, the stream
// and the consumer again, until the two reads of each agree. A publish
// between them makes a reading an upper bound (the count read against the
// later end). A delete does not: nats-server records it in the stream
// (its deleted list) before it takes it off the consumer's count
// (memstore.removeMsg calls the stream's callback, which calls
// consumer.decStreamPending, after it lets go of the store), so a
// consumer read in between counts as pending an event the first read
// lists as deleted, and the reading is one low per such delete: a
// caller's sweep would take an event passed over for delivered (a CI run
// read it so, once in 30 reads under publishes and deletes). The second
// consumer read sees such a delete land. On a cluster the window is wider:
// the stream's leader answers the stream's reads and the consumer's leader
// the consumer's, counting against its own server's copy of the stream,
// which may apply a delete (or a publish) later than the stream's leader
// (TestReviewRev15PassedToOnAReplicatedStreamUnderDeletesIsNeverBelowThePosition:
// a consumer read one round trip after a delete's reply still counted it
// in 1 to 6 of 20 in the reviews' runs). So a quiet reading is taken
// only when the next try, passedToSettle later, is quiet and reads the
// same; a copy lagging past that is not ruled out. If no two quiet tries
// agree in passedToReads, the highest reading is returned: a caller's
// sweep then judges a few events the consumer delivers as passed over,
// never the reverse. A read that fails is an error: the caller keeps the
// bound it read before the widening.
func PassedTo(ctx context.Context, js jetstream.JetStream, stream, durable string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("topology: where consumer %s goes on from: %w", durable, err)
	}
	c, err := js.Consumer(ctx, stream, durable)
	if err != nil {
		return 0, fmt.Errorf("topology: where consumer %s goes on from: %w", durable, err)
	}
	state := func() (jetstream.StreamState, error) {
		info, err := s.Info(ctx)
		if err == nil && info.State.NumDeleted > 0 && info.State.NumDeleted <= maxDeletedRead {
			info, err = s.Info(ctx, jetstream.WithDeletedDetails(true))
		}
		if err != nil {
			return jetstream.StreamState{}, fmt.Errorf("topology: where consumer %s goes on from: %w", durable, err)
		}
		return info.State, nil
	}
	consumer := func() (*jetstream.ConsumerInfo, error) {
		ci, err := c.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("topology: where consumer %s goes on from: %w", durable, err)
		}
		return ci, nil
	}
	var highest, candidate uint64
	quietBefore := false // the last try was quiet, and read candidate
	for range passedToReads {
		before, err := state()
		if err != nil {
			return 0, err
		}
		ci, err := consumer()
		if err != nil {
			return 0, err
		}
		after, err := s.Info(ctx)
		if err != nil {
			return 0, fmt.Errorf("topology: where consumer %s goes on from: %w", durable, err)
		}
		again, err := consumer()
		if err != nil {
			return 0, err
		}
		// Deletes after the first read only lower the true position: the
		// first read's list gives an upper bound against either end.
		at := max(ci.Delivered.Stream, positionOf(after.State.LastSeq, ci.NumPending, before.Deleted))
		quiet := after.State.LastSeq == before.LastSeq && after.State.Msgs == before.Msgs &&
			again.NumPending == ci.NumPending && again.Delivered.Stream == ci.Delivered.Stream
		highest = max(highest, at)
		if !quiet {
			quietBefore = false
			continue
		}
		if quietBefore && at == candidate {
			return at, nil
		}
		quietBefore, candidate = true, at
		if err := sleepCtx(ctx, passedToSettle); err != nil {
			return 0, fmt.Errorf("topology: where consumer %s goes on from: %w", durable, err)
		}
	}
	return highest, nil
}

// passedToReads bounds PassedTo's tries for two quiet ones that agree,
// passedToSettle is the time between them (a replica's copy of the stream
// applies what its leader did within milliseconds); maxDeletedRead bounds
// the interior deletes it reads (an events stream has none unless an
// operator deleted some: with more, the position read is an upper bound).
const (
	passedToReads  = 10
	passedToSettle = 50 * time.Millisecond
	maxDeletedRead = 100_000
)

// positionOf is the highest x at or below last such that (x, last] holds
// pending stored events, deleted being the stream's interior deletes
// (any order, some outside the range): where a consumer stands that has
// pending events left of a stream whose last sequence is last. A deleted
// sequence counts for nothing, so x moves down past every one above it
// until the count holds.
func positionOf(last, pending uint64, deleted []uint64) uint64 {
	below := make([]uint64, 0, len(deleted))
	for _, d := range deleted {
		if d <= last {
			below = append(below, d)
		}
	}
	slices.Sort(below)
	x, gone, j := last-min(pending, last), uint64(0), len(below)-1
	for {
		for j >= 0 && below[j] > x {
			gone, j = gone+1, j-1
		}
		if pending+gone >= last {
			return 0
		}
		if next := last - pending - gone; next != x {
			x = next
			continue
		}
		return x
	}
}

// sleepCtx waits d, or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// lastSeq is a stream's last sequence.
func lastSeq(ctx context.Context, js jetstream.JetStream, stream string) (uint64, error) {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return 0, fmt.Errorf("topology: %s: %w", stream, err)
	}
	return s.CachedInfo().State.LastSeq, nil
}

// resume ends a hold RestoreLead began, even once ctx has ended (the
// hold's wait may have used it up); not resumed, it ends at its until.
func resume(ctx context.Context, js jetstream.JetStream, stream, durable string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	_, _ = js.ResumeConsumer(ctx, stream, durable)
}

// Leads reads which of sinks are marked leads on the server: a sink is
// marked if any of its events consumers is (a partition's consumer lost
// and recreated from its floor is marked again at the bind). A sink
// without consumers yet is not marked. A sink whose events consumers are
// all missing (lost while no dispatcher ran: the bind recreates them from
// their floors) is marked if a floor recorded for it says it led (floors,
// if not nil: Floor.Lead); without that, a config that does not list it
// first would make another sink the lead and recreate it reading only its
// types, and what it had not read, off them, would be checked by no one.
func (t Topology) Leads(ctx context.Context, js jetstream.JetStream, floors jetstream.KeyValue, sinks []string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, sink := range sinks {
		found := false
		for _, stream := range t.EventsStreams() {
			c, err := js.Consumer(ctx, stream, SinkConsumer(sink))
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("topology: read whether sink %s leads: consumer %s on %s: %w", sink, SinkConsumer(sink), stream, err)
			}
			found = true
			if IsLead(c.CachedInfo()) {
				out[sink] = true
				break
			}
		}
		if found || floors == nil {
			continue
		}
		for _, stream := range t.EventsStreams() {
			f, ok, err := readFloor(ctx, floors, sink, stream)
			if err != nil {
				return nil, fmt.Errorf("topology: read whether sink %s leads: %w", sink, err)
			}
			if ok && f.Lead {
				out[sink] = true
				break
			}
		}
	}
	return out, nil
}

// PriorRead is what a sink's events consumer on one partition read
// before a bind: whether it existed, its filters (FiltersOf: none is
// every subject) and a stream sequence at or below which it has passed
// over what its filters do not take: its last delivery (PriorReads), or,
// held still, where it goes on from or a bound above it (HeldPriorReads,
// PassedTo).
type PriorRead struct {
	Exists    bool     `json:"exists"`
	Filters   []string `json:"filters,omitempty"`
	Delivered uint64   `json:"delivered"`
	// Start is the first stream sequence the consumer covers (StartOf):
	// below it, it read nothing, whatever its filters, so what is there
	// on them is not its own to have checked. 0: from the stream's first
	// (and in records written before it was kept); unknown (StartOf's
	// error): the highest, so that a sweep checks everything.
	Start uint64 `json:"start,omitempty"`
}

// ReadsEverything says the consumer read every subject already.
func (p PriorRead) ReadsEverything() bool { return p.Exists && len(p.Filters) == 0 }

// PriorReads reads what a sink's events consumers read now, in partition
// order: taken before a bind widens them (a sink made a lead), it says
// what they passed over.
func (t Topology) PriorReads(ctx context.Context, js jetstream.JetStream, sink string) ([]PriorRead, error) {
	out := make([]PriorRead, t.Partitions())
	for i, stream := range t.EventsStreams() {
		c, err := js.Consumer(ctx, stream, SinkConsumer(sink))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("topology: consumer %s on %s: %w", SinkConsumer(sink), stream, err)
		}
		info := c.CachedInfo()
		start, err := StartOf(info)
		if err != nil {
			start = math.MaxUint64
		}
		out[i] = PriorRead{Exists: true, Filters: filtersOn(info.Config, []string{t.PartitionSubjects(i)}), Delivered: info.Delivered.Stream, Start: start}
	}
	return out, nil
}

// HeldPriorReads is PriorReads of consumers HoldForWidening holds still,
// each Delivered raised to its stream's last sequence, read after them:
// a held consumer stands at or below it, and may stand above its last
// delivery (PassedTo), so what it passed over is all at or below it. A
// bind records its new lead's sweeps with it before it widens the
// consumers, then lowers it to where each goes on from (PassedTo): a bind
// stopped in between leaves a sweep that judges a few events the
// consumer delivers as passed over, never one it passed over as its own.
func (t Topology) HeldPriorReads(ctx context.Context, js jetstream.JetStream, sink string) ([]PriorRead, error) {
	prior, err := t.PriorReads(ctx, js, sink)
	if err != nil {
		return nil, err
	}
	for i, stream := range t.EventsStreams() {
		if !prior[i].Exists || prior[i].ReadsEverything() {
			continue
		}
		last, err := lastSeq(ctx, js, stream)
		if err != nil {
			return nil, fmt.Errorf("topology: where %s stands, %s's consumer held: %w", stream, sink, err)
		}
		prior[i].Delivered = max(prior[i].Delivered, last)
	}
	return prior, nil
}

// HoldForWidening pauses (JetStream's consumer pause, until until) a
// sink's events consumers that exist and do not read every subject, as
// prior found them: the bind that makes the sink the lead then reads
// where they stand (PriorReads again) while no replica's pull moves them,
// and what they passed over is exactly what is at or below it. The bind's
// update of each consumer widens its filter with the pause kept (an
// update never changes a consumer's pause), and ReleaseWidened then
// resumes it: nothing is passed over between the read and the widening.
// until bounds the pause of a bind that stops in between.
//
// It returns once each consumer's leader reports the pause, not when the
// pause request is answered: on a cluster the answer comes as soon as the
// meta leader has proposed the new config, before the consumer's leader
// applies it, and meanwhile its replicas' pulls still move it (a
// three-node cluster reported the consumer unpaused right after the
// answer: TestClusterConsumerHoldSurvivesLeaderChanges). A read of where
// it stands taken then would not be where it stays.
func (t Topology) HoldForWidening(ctx context.Context, js jetstream.JetStream, sink string, prior []PriorRead, until time.Time) error {
	for i, stream := range t.EventsStreams() {
		if i >= len(prior) || !prior[i].Exists || prior[i].ReadsEverything() {
			continue
		}
		if _, err := js.PauseConsumer(ctx, stream, SinkConsumer(sink), until); err != nil {
			return fmt.Errorf("topology: pause consumer %s on %s before it is widened: %w", SinkConsumer(sink), stream, err)
		}
		if err := waitPaused(ctx, js, stream, SinkConsumer(sink), until); err != nil {
			return fmt.Errorf("topology: pause consumer %s on %s before it is widened: %w", SinkConsumer(sink), stream, err)
		}
	}
	return nil
}

// holdApplyTimeout bounds the wait for a consumer's leader to apply a
// pause: a meta proposal and its application, milliseconds on a healthy
// cluster.
const holdApplyTimeout = 5 * time.Second

// waitPaused polls the consumer's info (its leader's answer) until it is
// paused until until or about then, within holdApplyTimeout. Another bind
// making the same lead at the same moment pauses it too, until its own
// now+leadHold: later than until, or milliseconds sooner if it computed
// its end first and its request landed last. Either holds the consumer
// for this bind's read and update, seconds; only a pause ending more than
// holdApplyTimeout sooner (left by a bind that stopped a while ago) is not
// taken for this one, which then has not been applied yet. Waiting for
// until exactly, a hold raced by another ending sooner gave up after
// holdApplyTimeout, the consumer held all along
// (TestReviewHoldForWideningAcceptsAConcurrentHoldEndingSooner: 11 of 40).
func waitPaused(ctx context.Context, js jetstream.JetStream, stream, consumer string, until time.Time) error {
	ctx, cancel := context.WithTimeout(ctx, holdApplyTimeout)
	defer cancel()
	atLeast := until.Add(-holdApplyTimeout)
	for {
		c, err := js.Consumer(ctx, stream, consumer)
		if err == nil {
			if info := c.CachedInfo(); info.Paused && info.Config.PauseUntil != nil && !info.Config.PauseUntil.Before(atLeast) {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = errors.New("its leader does not report the pause")
			}
			return fmt.Errorf("%w (%w)", err, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ReleaseWidened resumes the events consumers HoldForWidening paused,
// once the bind has widened them: those the server reports paused.
func ReleaseWidened(ctx context.Context, js jetstream.JetStream, events []jetstream.Consumer) error {
	for _, c := range events {
		info := c.CachedInfo()
		if info == nil || !info.Paused {
			continue
		}
		if _, err := js.ResumeConsumer(ctx, info.Stream, info.Name); err != nil {
			return fmt.Errorf("topology: resume consumer %s on %s once widened: %w", info.Name, info.Stream, err)
		}
	}
	return nil
}

// LeadFloors are, per partition, the lowest ack floor of the events
// consumers marked leads of sinks not in except (a lead a config
// dropped): what is above it a lead may not have checked yet. found says
// there is such a lead on some partition; a partition without one has
// floor 0. dropped are those leads, sorted.
func (t Topology) LeadFloors(ctx context.Context, js jetstream.JetStream, except []string) (floors []uint64, found []bool, dropped []string, err error) {
	floors, found = make([]uint64, t.Partitions()), make([]bool, t.Partitions())
	for i, stream := range t.EventsStreams() {
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("topology: %s: %w", stream, err)
		}
		list := st.ListConsumers(ctx)
		for info := range list.Info() {
			name, ok := strings.CutPrefix(info.Name, SinkConsumer(""))
			if !IsLead(info) || !ok || slices.Contains(except, name) {
				continue
			}
			if !slices.Contains(dropped, name) {
				dropped = append(dropped, name)
			}
			if !found[i] || info.AckFloor.Stream < floors[i] {
				floors[i], found[i] = info.AckFloor.Stream, true
			}
		}
		if err := list.Err(); err != nil {
			return nil, nil, nil, fmt.Errorf("topology: list consumers of %s: %w", stream, err)
		}
	}
	slices.Sort(dropped)
	return floors, found, dropped, nil
}

// PendingSweep is a new lead's sweep of one partition (dispatch's
// sweep.go) not known to be done: recorded in the floors bucket before
// the bind widens the sink's consumers, deleted once the sweep reaches
// its end. A bind that finds one for a sink it runs resumes it, so a
// sweep cut short by a stop or a crash is not left undone, whether or
// not the old lead is still on the server (its floor is in From).
type PendingSweep struct {
	From  uint64    `json:"from"`
	Prior PriorRead `json:"prior"`
}

// sweepKey is a pending sweep's key in the floors bucket. Sink names are
// lower case (envelope.IsSinkName), so no floor's key (FloorKey) starts
// like it.
func sweepKey(sink, stream string) string { return "Sweep." + sink + "." + stream }

// WriteSweep records a sink's pending sweep of partition i.
func (t Topology) WriteSweep(ctx context.Context, kv jetstream.KeyValue, sink string, i int, p PendingSweep) error {
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, sweepKey(sink, t.EventsStreamOf(i)), raw); err != nil {
		return fmt.Errorf("topology: record the pending sweep of %s on %s: %w", sink, t.EventsStreamOf(i), err)
	}
	return nil
}

// PendingSweeps reads a sink's pending sweeps, by partition.
func (t Topology) PendingSweeps(ctx context.Context, kv jetstream.KeyValue, sink string) (map[int]PendingSweep, error) {
	out := map[int]PendingSweep{}
	for i, stream := range t.EventsStreams() {
		e, err := kv.Get(ctx, sweepKey(sink, stream))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("topology: read the pending sweep of %s on %s: %w", sink, stream, err)
		}
		var p PendingSweep
		if err := json.Unmarshal(e.Value(), &p); err != nil {
			return nil, fmt.Errorf("topology: the pending sweep of %s on %s (key %s) is not one: %w", sink, stream, e.Key(), err)
		}
		out[i] = p
	}
	return out, nil
}

// DoneSweep deletes a sink's pending sweep of partition i: it reached its
// end.
func (t Topology) DoneSweep(ctx context.Context, kv jetstream.KeyValue, sink string, i int) error {
	if err := kv.Purge(ctx, sweepKey(sink, t.EventsStreamOf(i))); err != nil {
		return fmt.Errorf("topology: delete the pending sweep of %s on %s: %w", sink, t.EventsStreamOf(i), err)
	}
	return nil
}
