package topology

// Where each sink's events consumer stood, kept where it survives the
// consumer: a consumer deleted or lost while no dispatcher runs takes its
// position with it, and the next start would otherwise create it as a new
// sink's, from new events, skipping its backlog (still in the stream:
// limits retention) without a word.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// FloorsBucket is the key-value bucket holding each sink's events
// consumers' ack floors: one key per sink and events stream (FloorKey),
// the latest value only.
func (t Topology) FloorsBucket() string { return t.stream + "_FLOORS" }

// FloorKey is the key of a sink's floor on one events stream.
func FloorKey(sink, stream string) string { return sink + "." + stream }

// Floor is an events consumer's position as last read by a dispatcher.
// Any floor once read is a lower bound of where the consumer is (an ack
// floor only rises), so writers need no coordination: the last one wins,
// and a stale one costs only events delivered again.
type Floor struct {
	// Stream and StreamCreated name the stream instance the floor is in:
	// a stream deleted and made again under the same name (a change of
	// streams.partitions) restarts its sequences, and a floor of the old
	// one means nothing there.
	Stream        string    `json:"stream"`
	StreamCreated time.Time `json:"stream_created"`
	// AckFloor is the stream sequence at or below which the consumer had
	// acked everything.
	AckFloor uint64 `json:"floor"`
	// StartSeq is the consumer's recorded start (StartMetadata), which
	// a recreated consumer keeps: which sink covers which event does not
	// change with a loss.
	StartSeq uint64    `json:"start_seq"`
	Updated  time.Time `json:"updated"`
	// Lead says the consumer was marked a lead (LeadMetadata): a lead
	// lost while no dispatcher runs is still the lead at the next bind
	// (Leads), which recreates it reading every subject, wherever the
	// sink is in that config.
	Lead bool `json:"lead,omitempty"`
}

// EnsureFloors creates or updates the floors bucket and returns it. It is
// idempotent; every dispatcher runs it as it binds. A value is rewritten
// while its consumer moves, so the bucket stays one small value per sink
// and partition; a sink's values go with it (RemoveSink).
//
// Values may be up to floorsValueMax: a takeover record (Takeover) lists
// its config's sinks. A bucket made with less (1 KiB, before) is raised
// by the next bind.
func (t Topology) EnsureFloors(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	storage := jetstream.FileStorage
	if t.cfg.Storage == "memory" {
		storage = jetstream.MemoryStorage
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       t.FloorsBucket(),
		Description:  "Chapar: each sink's events consumers' ack floors, to recreate one lost while no dispatcher runs",
		History:      1,
		MaxValueSize: floorsValueMax,
		Storage:      storage,
		Replicas:     t.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("topology: floors bucket %s: %w", t.FloorsBucket(), err)
	}
	return kv, nil
}

// floorsValueMax bounds a value of the floors bucket. A takeover record
// names every sink of the config that wrote it, each up to 63 bytes: at
// 1 KiB, a config of 16 long-named sinks could not record one, and
// `dispatcher sinks remove` refused the old lead until it had read its
// backlog, for ever on a deployment taking events
// (TestReviewATakeoverByAConfigOfManySinksIsRecorded). 64 KiB is the
// presence bucket's bound too, for the same list.
const floorsValueMax = 64 * 1024

// WriteFloor stores a sink's floor on f.Stream.
func WriteFloor(ctx context.Context, kv jetstream.KeyValue, sink string, f Floor) error {
	raw, err := json.Marshal(f)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, FloorKey(sink, f.Stream), raw); err != nil {
		return fmt.Errorf("topology: write the floor of %s on %s: %w", sink, f.Stream, err)
	}
	return nil
}

// ReadFloor reads a sink's floor on stream; found is false if none is
// recorded.
func ReadFloor(ctx context.Context, kv jetstream.KeyValue, sink, stream string) (f Floor, found bool, err error) {
	return readFloor(ctx, kv, sink, stream)
}

// readFloor is ReadFloor.
func readFloor(ctx context.Context, kv jetstream.KeyValue, sink, stream string) (f Floor, found bool, err error) {
	e, err := kv.Get(ctx, FloorKey(sink, stream))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Floor{}, false, nil
	}
	if err != nil {
		return Floor{}, false, fmt.Errorf("topology: read the floor of %s on %s: %w", sink, stream, err)
	}
	if err := json.Unmarshal(e.Value(), &f); err != nil {
		return Floor{}, false, fmt.Errorf("topology: the floor of %s on %s (key %s in %s) is not a floor record: %w", sink, stream, e.Key(), e.Bucket(), err)
	}
	return f, true, nil
}

// floorKeys are the keys of every floor recorded for a sink, on any
// stream, this layout's or not.
func floorKeys(ctx context.Context, kv jetstream.KeyValue, sink string) ([]string, error) {
	return bucketKeys(ctx, kv, sink+".>")
}

// bucketKeys are the keys in kv that match filter.
func bucketKeys(ctx context.Context, kv jetstream.KeyValue, filter string) ([]string, error) {
	keys, err := kv.ListKeysFiltered(ctx, filter)
	if err != nil {
		return nil, fmt.Errorf("topology: list %s in %s: %w", filter, kv.Bucket(), err)
	}
	var out []string
	for k := range keys.Keys() {
		out = append(out, k)
	}
	// The listing ends quietly, cut short, when ctx does (nats.go 1.55):
	// a partial list read as whole would drop records or vouch wrongly.
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("topology: list %s in %s: %w", filter, kv.Bucket(), err)
	}
	return out, nil
}

// countFloors counts the floors recorded for a sink; a deployment without
// the bucket has none.
func (t Topology) countFloors(ctx context.Context, js jetstream.JetStream, sink string) (int, error) {
	kv, err := js.KeyValue(ctx, t.FloorsBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("topology: floors bucket %s: %w", t.FloorsBucket(), err)
	}
	keys, err := floorKeys(ctx, kv, sink)
	return len(keys), err
}

// DeleteFloors deletes every floor recorded for a sink: a sink removed and
// added again later is a new sink, not one resuming a floor of weeks ago.
// A deployment without the bucket has nothing to delete.
func (t Topology) DeleteFloors(ctx context.Context, js jetstream.JetStream, sink string) error {
	kv, err := js.KeyValue(ctx, t.FloorsBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("topology: floors bucket %s: %w", t.FloorsBucket(), err)
	}
	keys, err := floorKeys(ctx, kv, sink)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if err := kv.Purge(ctx, k); err != nil {
			return fmt.Errorf("topology: delete floor %s: %w", k, err)
		}
	}
	// A pending sweep (PendingSweep) goes with the sink too, and the
	// records of leads made in place of it or of it made one (Takeover).
	for i := range t.EventsStreams() {
		if err := t.DoneSweep(ctx, kv, sink, i); err != nil {
			return err
		}
	}
	// And the claims of its losses reported (claimLoss).
	lost, err := bucketKeys(ctx, kv, lostKey(sink, "*", "*"))
	if err != nil {
		return err
	}
	for _, k := range lost {
		if err := kv.Purge(ctx, k); err != nil {
			return fmt.Errorf("topology: delete %s: %w", k, err)
		}
	}
	return deleteTakeovers(ctx, kv, sink)
}

// lostKey is the floors bucket's key claiming the report of one loss: a
// sink's events consumer on stream, recreated as the instance created at
// instance (its creation's Unix nanoseconds).
func lostKey(sink, stream, instance string) string {
	return "Lost." + sink + "." + stream + "." + instance
}

// claimLoss says whether the caller is the one to report r: it creates
// r's key in the floors bucket, which succeeds once per loss whichever
// dispatcher, process or bind try gets there first. Two replicas binding
// at once after one loss, or a mark another replica's keep wrote back for
// a later start to find (LostUnreportedMetadata), then count it once in
// all, not once each (TestReviewRev22OneLossTwoReplicasBindingAtOnceIs-
// ReportedOnce). The claim is made just before the report, with no
// request between the two: a process dying in between is the only way a
// claimed loss goes unreported. Whenever the claim cannot be settled (no
// bucket, a loss without its instance, a request failed or answered too
// late, which may have created the key all the same), it is reported:
// counted twice, never missed.
func claimLoss(ctx context.Context, kv jetstream.KeyValue, sink string, r Restored) bool {
	if kv == nil || r.Instance.IsZero() {
		return true
	}
	_, err := kv.Create(ctx, lostKey(sink, r.Stream, strconv.FormatInt(r.Instance.UnixNano(), 10)), []byte(r.Instance.UTC().Format(time.RFC3339Nano)))
	return !errors.Is(err, jetstream.ErrKeyExists)
}

// LostPlan is what to do with a sink's events consumer found missing as
// a dispatcher binds (DecideLost).
type LostPlan int

const (
	// LostNew: the sink is new; its consumer is created as any new sink's
	// (new events, or sinks[].start).
	LostNew LostPlan = iota
	// LostFromFloor: recreate it above its recorded floor, with its
	// recorded start.
	LostFromFloor
	// LostFromFirst: the sink is known but never had a consumer on this
	// stream (made after the sink's floors were last written: a change of
	// streams.partitions): every event the stream holds is its own.
	LostFromFirst
	// LostFromStart: no floor is known; sinks[].start says where to go.
	LostFromStart
	// LostUnknown: no floor is known and nothing says where to go.
	LostUnknown
)

// LostFacts are what is known of a sink whose events consumer on a stream
// is missing.
type LostFacts struct {
	Floor      Floor
	FloorFound bool // a floor is recorded for this stream, of this instance
	// Tracked: the sink has floors recorded, on this stream or others.
	Tracked bool
	// HasRetries: its retries consumer exists (the sink is not new).
	HasRetries bool
	// HasStart: sinks[].start is a time.
	HasStart bool
}

// DecideLost says how to create a sink's missing events consumer. A sink
// with a floor on this stream resumes above it. Otherwise a sink without
// its retries consumer is new: EnsureSink creates the retries consumer
// last, so a sink another dispatcher is creating at this moment has none
// yet, even with floors on its other partitions. A sink with floors on
// other streams only (floors are written at every bind, so it never had a
// consumer on this one: a change of streams.partitions) takes all the
// stream holds. A sink with no floor at all is not new, and where it
// stood is unknown (a deployment from before floors, or the bucket lost
// with the consumer): neither new events (a silent loss) nor the stream's
// first event (up to streams.max_age delivered again) is a default;
// sinks[].start decides, or nothing does.
func DecideLost(f LostFacts) LostPlan {
	switch {
	case f.FloorFound:
		return LostFromFloor
	case !f.HasRetries:
		return LostNew
	case f.Tracked:
		return LostFromFirst
	case f.HasStart:
		return LostFromStart
	default:
		return LostUnknown
	}
}

// ErrFloorUnknown says a sink's events consumer is missing, the sink is
// not new, and where it stood is not recorded.
var ErrFloorUnknown = errors.New("topology: the sink's events consumer is missing and where it stood is not recorded")

// Restored is an events consumer EnsureSink found missing and recreated,
// for the caller to log and count.
type Restored struct {
	Stream string
	Plan   LostPlan
	// From is the first stream sequence it delivers (0: from sinks[].start).
	From uint64
	// StartSeq is the start it was given (StartMetadata).
	StartSeq uint64
	// Floor is the record it resumed from (LostFromFloor).
	Floor Floor
	// Gone are events between From and the stream's first sequence: aged
	// out (streams.max_age) before the consumer was recreated, not
	// recoverable.
	Gone uint64
	// AgainAtMost bounds the events delivered a second time: every event
	// from From to the stream's last sequence that the lost consumer had
	// acked since its floor was recorded.
	AgainAtMost uint64
	// Instance is the recreated consumer's creation: one loss, however
	// many calls report it (a call cut after it reported the loss and
	// before it cleared LostUnreportedMetadata leaves it to the next).
	Instance time.Time
}

// unreported is the loss an events consumer's LostUnreportedMetadata
// says is not reported yet, nil if it carries none.
func unreported(stream string, info *jetstream.ConsumerInfo) *Restored {
	v, ok := info.Config.Metadata[LostUnreportedMetadata]
	if !ok {
		return nil
	}
	r := Restored{Plan: LostFromStart}
	if v != "from_start" {
		// Unreadable (edited by hand): still a loss, its details lost.
		r = Restored{Plan: LostFromFloor}
		_ = json.Unmarshal([]byte(v), &r)
	}
	r.Stream, r.Instance = stream, info.Created
	return &r
}

// restoreLost recreates a sink's events consumer on stream if it is
// missing and the sink is not new (DecideLost), and says what it did; nil
// if the consumer exists, or the sink is new. sinks[].start is to create
// it (LostFromStart: ensureEvents does, as for a new sink, and the caller
// fills in where it began), or did in a call that did not report it
// (LostUnreportedMetadata). create says the consumer was found missing
// and ensureEvents is to create it (a new sink, or LostFromStart):
// otherwise one gone by then was lost since, and is not made afresh.
func restoreLost(ctx context.Context, js jetstream.JetStream, t Topology, kv jetstream.KeyValue, sink, stream string, cfg jetstream.ConsumerConfig, start time.Time) (r *Restored, create bool, err error) {
	if c, err := js.Consumer(ctx, stream, cfg.Durable); err == nil {
		// Created after a loss by a call cut before it cleared the mark
		// (reported or not): this one reports it.
		return unreported(stream, c.CachedInfo()), false, nil
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, false, err
	}
	// The retries consumer is read before the floors: EnsureSink writes a
	// floor before it creates the retries consumer, so a retries consumer
	// another dispatcher created after the look-up above has its floor
	// already written, and a sink that one is creating at this moment is
	// new or found with its floor, never "not new, no floor". Read after
	// the floors, the retries consumer of a bind running alongside could
	// appear between the two reads (two configs binding a fresh
	// deployment at once: TestTwoConfigsBindingAFreshDeploymentAtOnce…
	// failed its start with ErrFloorUnknown in 1 run of 3 under -race
	// -parallel 4).
	var facts LostFacts
	if facts.HasRetries, err = t.HasSink(ctx, js, sink); err != nil {
		return nil, false, err
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, false, err
	}
	info := st.CachedInfo()
	if facts.Floor, facts.FloorFound, err = readFloor(ctx, kv, sink, stream); err != nil {
		return nil, false, err
	}
	// A floor of another stream by that name, or past this one's end, is
	// not a position in this one.
	if facts.FloorFound && (!facts.Floor.StreamCreated.Equal(info.Created) || facts.Floor.AckFloor > info.State.LastSeq) {
		facts.FloorFound = false
	}
	keys, err := floorKeys(ctx, kv, sink)
	if err != nil {
		return nil, false, err
	}
	facts.Tracked = len(keys) > 0
	facts.HasStart = !start.IsZero()
	r = &Restored{Stream: stream, Plan: DecideLost(facts), Floor: facts.Floor}
	switch r.Plan {
	case LostNew:
		return nil, true, nil
	case LostFromStart:
		return r, true, nil
	case LostUnknown:
		return nil, false, fmt.Errorf("%w: consumer %s on %s is missing while the sink's retries consumer exists, and no ack floor is recorded for it in %s "+
			"(a deployment that last ran a Chapar without floor records, or the bucket lost too)", ErrFloorUnknown, cfg.Durable, stream, t.FloorsBucket())
	case LostFromFloor:
		r.From, r.StartSeq = facts.Floor.AckFloor+1, facts.Floor.StartSeq
	case LostFromFirst:
		// Every event the stream holds was stored while the sink existed.
		r.From, r.StartSeq = max(info.State.FirstSeq, 1), 1
	}
	if first, last := info.State.FirstSeq, info.State.LastSeq; r.Plan == LostFromFloor {
		// An empty stream's first sequence is its last plus one, so
		// everything aged out counts here too.
		if r.From < first {
			r.Gone = first - r.From
		}
		if from := max(r.From, first); last >= from {
			r.AgainAtMost = last - from + 1
		}
	}
	cfg.Metadata = maps.Clone(cfg.Metadata)
	if cfg.Metadata == nil {
		cfg.Metadata = map[string]string{}
	}
	cfg.Metadata[StartMetadata] = strconv.FormatUint(r.StartSeq, 10)
	// Marked with its loss until the caller has reported it: a create
	// applied after this call gave up on it leaves the mark to report.
	mark, err := json.Marshal(r)
	if err != nil {
		return nil, false, fmt.Errorf("topology: encode the loss of %s on %s: %w", cfg.Durable, stream, err)
	}
	cfg.Metadata[LostUnreportedMetadata] = string(mark)
	c, created, err := RecreateConsumer(ctx, js, stream, cfg, r.From)
	if err != nil {
		return nil, false, err
	}
	if !created {
		// Found made: by another dispatcher (from the same facts, or as
		// a new sink's), it stands, and is no loss of ours unless it
		// is marked with one not reported yet (an earlier try's create
		// that landed late).
		return unreported(stream, c.CachedInfo()), false, nil
	}
	r.Instance = c.CachedInfo().Created
	return r, false, nil
}
