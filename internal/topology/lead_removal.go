package topology

// Removing a lead (`dispatcher sinks remove`) without losing what it had
// not checked yet. A lead's unacked backlog is checked by the next sink
// made the lead in its place: that bind sweeps from the lowest ack floor
// of the leads on the server its config does not run (LeadFloors). Once
// the old lead is gone its floor is gone too, so a lead made later, for
// instance by its own set's next config while another set of sinks has
// its lead (replicas running disjoint configs), sweeps from the other
// lead's floor, past that backlog, and the other lead judged it by its
// own routes, which do not name this set's sinks: an event on a subject
// its sink does not read, in the removed lead's backlog, is neither
// delivered nor dead-lettered. So a lead goes only when nothing it had
// not checked can be lost (LeadRemoval.Check): it has nothing pending and
// nothing unacked, or a lead made in place of it by a config holding
// every other sink that is not a lead itself has recorded its sweep
// (Takeover) and done it; and never while its own sweep of a lead it
// replaced is not done (its removal deletes that record, and nothing else
// resumes it).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Takeover records that a bind made sink By the lead while Old, a lead
// its config lacks, was on the server: By's sweep (dispatch's sweep.go,
// recorded as a PendingSweep until done and resumed by any bind running
// By) checks by that config's routes what Old had not acked, and By reads
// every subject from then on. Written in the floors bucket before the
// widening, only if every pending sweep of that bind was recorded; a bind
// of another config that resumes the sweep narrows Sinks to its own
// (NarrowTakeovers).
type Takeover struct {
	By string `json:"by"`
	// Sinks are the config's: the sinks whose checks By's sweep made.
	Sinks []string  `json:"sinks"`
	At    time.Time `json:"at"`
	// Through is each events stream's last sequence when the takeover
	// was recorded (Positions), read after By's consumers were held and
	// read (PriorReads): By's widened consumers read every subject above
	// it themselves. (By's sweep reads on to the stream's end when it
	// runs, at or above it.) A sink whose consumers start above it has
	// no event at or below it: the sweep had nothing of its to check
	// there (WidenTakeovers). Empty in records written before it was
	// kept.
	Through map[string]uint64 `json:"through,omitempty"`
}

// takeoverKey is a takeover's key in the floors bucket. Sink names are
// lower case without dots (envelope.IsSinkName), so no floor's key
// (FloorKey) and no sweep's (sweepKey) starts like it.
func takeoverKey(old, by string) string { return "Lead." + old + "." + by }

// WriteTakeover records that tk.By was made the lead in place of old.
func (t Topology) WriteTakeover(ctx context.Context, kv jetstream.KeyValue, old string, tk Takeover) error {
	raw, err := json.Marshal(tk)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, takeoverKey(old, tk.By), raw); err != nil {
		return fmt.Errorf("topology: record that %s leads in place of %s: %w", tk.By, old, err)
	}
	return nil
}

// Takeovers reads the leads recorded as made in place of old.
func (t Topology) Takeovers(ctx context.Context, kv jetstream.KeyValue, old string) ([]Takeover, error) {
	keys, err := bucketKeys(ctx, kv, takeoverKey(old, "*"))
	if err != nil {
		return nil, err
	}
	var out []Takeover
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // deleted meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("topology: read %s: %w", k, err)
		}
		var tk Takeover
		if err := json.Unmarshal(e.Value(), &tk); err != nil {
			return nil, fmt.Errorf("topology: %s is not a lead's takeover record: %w", k, err)
		}
		out = append(out, tk)
	}
	return out, nil
}

// NarrowTakeovers is for a bind that resumes by's sweep (PendingSweep):
// what is left of it is checked by this config's routes, for names only,
// so the takeovers by's sweep vouches for keep only the sinks of names.
// A compare-and-set, again on a conflict: binds of other configs that
// resume it at the same time each take theirs out.
func (t Topology) NarrowTakeovers(ctx context.Context, kv jetstream.KeyValue, by string, names []string) error {
	_, err := changeTakeovers(ctx, kv, by, "narrow %s to the sinks of the config resuming its sweep", func(tk *Takeover) (bool, error) {
		kept := slices.DeleteFunc(slices.Clone(tk.Sinks), func(s string) bool { return !slices.Contains(names, s) })
		if len(kept) == len(tk.Sinks) {
			return false, nil
		}
		tk.Sinks = kept
		return true, nil
	})
	return err
}

// changeTakeovers applies change to each takeover by by, and writes what it
// changed by compare-and-set: on a conflict (another bind changed it
// meanwhile) it reads it again and applies change again, up to five times.
// It returns the keys it wrote; what names the failure (a format with the
// key) is for its error.
func changeTakeovers(ctx context.Context, kv jetstream.KeyValue, by, what string, change func(tk *Takeover) (bool, error)) ([]string, error) {
	keys, err := bucketKeys(ctx, kv, takeoverKey("*", by))
	if err != nil {
		return nil, err
	}
	var changed []string
	for _, k := range keys {
		for attempt := 1; ; attempt++ {
			e, err := kv.Get(ctx, k)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				break // deleted meanwhile
			}
			if err != nil {
				return changed, fmt.Errorf("topology: read %s: %w", k, err)
			}
			var tk Takeover
			if err := json.Unmarshal(e.Value(), &tk); err != nil {
				return changed, fmt.Errorf("topology: %s is not a lead's takeover record: %w", k, err)
			}
			ok, err := change(&tk)
			if err != nil {
				return changed, err
			}
			if !ok {
				break
			}
			raw, err := json.Marshal(tk)
			if err != nil {
				return changed, fmt.Errorf("topology: %s: %w", k, err)
			}
			_, err = kv.Update(ctx, k, raw, e.Revision())
			if err == nil {
				changed = append(changed, k)
				break
			}
			if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) || attempt == 5 {
				return changed, fmt.Errorf("topology: "+what+": %w", k, err)
			}
		}
	}
	return changed, nil
}

// WidenTakeovers is for a bind that runs by, a lead already: the sinks
// of names its takeovers lack that were added after the takeover by a
// config running by (their events consumers start above Through on every
// stream it names, and were created by a bind whose leads included by:
// CreatedWithMetadata) join their Sinks. The sweep had none of their
// events to check (their consumers did not exist yet), and by judged for
// them what it read from their start, by the config that added them.
// Without it a sink added in a rollout after the old lead was dropped
// kept `sinks remove` of the old lead refused for as long as that lead
// had a backlog (for ever, on a deployment taking events), though nothing
// of the added sink's was in what the sweep checked. A sink that could
// have had an event in the swept range (a start at or below Through: made
// before, or by a sinks[].start in the past) is not added: the sweep did
// not check for it. Nor is one created by a config without by (the old
// lead's set, say): by judged its strays by a config without it, and only
// the old lead, in its backlog, judged them for it
// (TestReviewASinkAddedByTheOldLeadsSetDoesNotJoinTheTakeover); nor one
// recreated after a loss, which does not say who made it. A
// compare-and-set, as NarrowTakeovers. It returns the keys it widened.
func (t Topology) WidenTakeovers(ctx context.Context, js jetstream.JetStream, kv jetstream.KeyValue, by string, names []string) ([]string, error) {
	return changeTakeovers(ctx, kv, by, "add the sinks added since to %s", func(tk *Takeover) (bool, error) {
		var added []string
		for _, s := range names {
			if s == by || slices.Contains(tk.Sinks, s) {
				continue
			}
			after, err := t.addedSince(ctx, js, s, by, tk.Through)
			if err != nil {
				return false, err
			}
			if after {
				added = append(added, s)
			}
		}
		if len(added) == 0 {
			return false, nil
		}
		tk.Sinks = append(slices.Clone(tk.Sinks), added...)
		slices.Sort(tk.Sinks)
		return true, nil
	})
}

// addedSince says whether sink's events consumer on every stream of
// through starts above its sequence there and was created by a config
// whose leads included by. Anything unknown (no record, a consumer
// missing, a start or creator not recorded) is a no.
func (t Topology) addedSince(ctx context.Context, js jetstream.JetStream, sink, by string, through map[string]uint64) (bool, error) {
	if len(through) == 0 {
		return false, nil
	}
	for stream, seq := range through {
		c, err := js.Consumer(ctx, stream, SinkConsumer(sink))
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("topology: read where %s starts on %s: %w", sink, stream, err)
		}
		// A start not known (StartOf's error: not recorded yet, or not
		// a sequence) is a no, not a failure of the bind.
		if start, err := StartOf(c.CachedInfo()); err != nil || start <= seq {
			return false, nil
		}
		if !slices.Contains(CreatedWith(c.CachedInfo()), by) {
			return false, nil
		}
	}
	return true, nil
}

// Positions reads each events stream's last sequence: a takeover's
// Through.
func (t Topology) Positions(ctx context.Context, js jetstream.JetStream) (map[string]uint64, error) {
	out := make(map[string]uint64, t.Partitions())
	for _, stream := range t.EventsStreams() {
		last, err := lastSeq(ctx, js, stream)
		if err != nil {
			return nil, err
		}
		out[stream] = last
	}
	return out, nil
}

// deleteTakeovers deletes the records of leads made in place of sink and
// of sink made a lead in place of others: removed, it neither needs nor
// vouches for a sweep.
func deleteTakeovers(ctx context.Context, kv jetstream.KeyValue, sink string) error {
	for _, filter := range []string{takeoverKey(sink, "*"), takeoverKey("*", sink)} {
		keys, err := bucketKeys(ctx, kv, filter)
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := kv.Purge(ctx, k); err != nil {
				return fmt.Errorf("topology: delete %s: %w", k, err)
			}
		}
	}
	return nil
}

// LeadRemoval is what decides whether removing a sink can lose a lead's
// checks (Check), as read from the server (ReadLeadRemoval).
type LeadRemoval struct {
	Sink string
	// Lead says its events consumers are marked a lead.
	Lead bool
	// Pending and AckPending are summed over its events consumers: what
	// it has not read, and what it was delivered and has not acked.
	Pending, AckPending uint64
	// Others are the other sinks with events consumers, true for those
	// marked leads.
	Others map[string]bool
	// Takeovers are the leads recorded as made in place of it.
	Takeovers []Takeover
	// Unswept are, for the leads of Takeovers, the partitions of their
	// sweeps not done (PendingSweep): a sweep vouches for the backlog
	// once it has checked it, and one resumed by a config with fewer
	// sinks narrows its takeover first (NarrowTakeovers).
	Unswept map[string]int
	// Sweeping are the partitions of its own sweep, of the backlog of a
	// lead it was made the lead in place of, not done (PendingSweep):
	// its removal deletes them, and no one else resumes them.
	Sweeping int
}

// Check says whether the sink can go without a lead's check lost, and if
// not, why and what to do.
func (r LeadRemoval) Check() error {
	if !r.Lead || len(r.Others) == 0 {
		return nil // no lead, or the last sink: no one left to check for
	}
	if r.Sweeping > 0 {
		return fmt.Errorf("sink %s has not finished checking the backlog of the lead it was made the lead in place of "+
			"(%d partitions; Sweep.%s.<stream> in the floors bucket), and removing it drops that check: "+
			"run a dispatcher whose config has %s until it logs \"checked the old lead's backlog\", stop it, "+
			"then run this again (docs/operations.md, \"Removing the lead\")", r.Sink, r.Sweeping, r.Sink, r.Sink)
	}
	var leads []string
	for s, lead := range r.Others {
		if lead {
			leads = append(leads, s)
		}
	}
	slices.Sort(leads)
	if len(leads) == 0 {
		return fmt.Errorf("sink %s is the deployment's lead (its consumer reads every subject and checks what no other sink reads: "+
			"invalid envelopes, events on a subject their sink does not read) and no other sink is a lead yet: "+
			"start a dispatcher whose config lacks %s first (its first sink becomes the lead and checks what %s had not read), "+
			"then run this again (docs/operations.md, \"Removing the lead\")", r.Sink, r.Sink, r.Sink)
	}
	if r.Pending == 0 && r.AckPending == 0 {
		return nil // it checked everything stored
	}
	var short, unswept []string
	for _, tk := range r.Takeovers {
		if !r.Others[tk.By] {
			continue // not a lead (any more): its sweep vouches for nothing
		}
		missing := r.uncovered(tk)
		if len(missing) > 0 {
			short = append(short, fmt.Sprintf("%s, whose config lacked %s", tk.By, strings.Join(missing, ", ")))
		}
		if n := r.Unswept[tk.By]; n > 0 {
			// Cut short: resumed by the next bind running it, whose
			// config may lack sinks of this one's.
			unswept = append(unswept, fmt.Sprintf("%s (%d partitions; Sweep.%s.<stream> in the floors bucket)", tk.By, n, tk.By))
			continue
		}
		if len(missing) == 0 {
			return nil
		}
	}
	var whys []string
	if len(unswept) > 0 {
		whys = append(whys, "the leads made in place of it have not finished checking its backlog ("+strings.Join(unswept, "; ")+")")
	}
	if len(short) > 0 {
		whys = append(whys, "the leads made in place of it checked its backlog for their own configs only ("+strings.Join(short, "; ")+
			"; if those sinks are being removed too, remove them first)")
	}
	why := "no sink has been made the lead in place of it"
	if len(whys) > 0 {
		why = strings.Join(whys, ", and ")
	}
	return fmt.Errorf("sink %s is a lead with %d events it has not read and %d it has not acked, and %s: "+
		"the other leads (%s) do not check that backlog for the sinks of %s's configs, and a sink made their lead after this removal "+
		"would check from another lead's floor, past it. Start a dispatcher whose config lacks %s and has the other sinks it ran with, "+
		"and wait for its log \"checked the old lead's backlog\"; or run %s again in a config, resume it if paused "+
		"(dispatcher sinks resume %s) and let it read its backlog (0 pending, 0 in flight in the dry run), then stop it; "+
		"then run this again (docs/operations.md, \"Removing the lead\")",
		r.Sink, r.Pending, r.AckPending, why, strings.Join(leads, ", "), r.Sink, r.Sink, r.Sink, r.Sink)
}

// uncovered are the other sinks, not leads themselves, that tk's config
// lacked: the sweep did not check the backlog for them. A lead checks for
// its own set of sinks.
func (r LeadRemoval) uncovered(tk Takeover) []string {
	var out []string
	for s, lead := range r.Others {
		if !lead && !slices.Contains(tk.Sinks, s) {
			out = append(out, s)
		}
	}
	slices.Sort(out)
	return out
}

// ReadLeadRemoval reads what LeadRemoval.Check decides on. A deployment
// without the floors bucket has no takeovers.
func (t Topology) ReadLeadRemoval(ctx context.Context, js jetstream.JetStream, sink string) (LeadRemoval, error) {
	r := LeadRemoval{Sink: sink, Others: map[string]bool{}}
	for _, stream := range t.EventsStreams() {
		st, err := js.Stream(ctx, stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return r, fmt.Errorf("topology: %s: %w", stream, err)
		}
		list := st.ListConsumers(ctx)
		for info := range list.Info() {
			name, ok := strings.CutPrefix(info.Name, SinkConsumer(""))
			if !ok {
				continue
			}
			if name == sink {
				r.Lead = r.Lead || IsLead(info)
				r.Pending += info.NumPending
				r.AckPending += uint64(max(info.NumAckPending, 0))
				continue
			}
			r.Others[name] = r.Others[name] || IsLead(info)
		}
		if err := list.Err(); err != nil {
			return r, fmt.Errorf("topology: list consumers of %s: %w", stream, err)
		}
	}
	if !r.Lead {
		return r, nil
	}
	kv, err := js.KeyValue(ctx, t.FloorsBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("topology: floors bucket %s: %w", t.FloorsBucket(), err)
	}
	if r.Takeovers, err = t.Takeovers(ctx, kv, sink); err != nil {
		return r, err
	}
	r.Unswept = map[string]int{}
	for _, tk := range r.Takeovers {
		p, err := t.PendingSweeps(ctx, kv, tk.By)
		if err != nil {
			return r, err
		}
		r.Unswept[tk.By] = len(p)
	}
	sweeping, err := t.PendingSweeps(ctx, kv, sink)
	r.Sweeping = len(sweeping)
	return r, err
}
