package dlq

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Filter selects dead letters; zero fields match everything.
type Filter struct {
	Sink    string
	Status  int
	Code    string
	Reason  outcome.Reason
	EventID string
	// EventType is the envelope's type, e.g. chapar.track.
	EventType string
	Since     time.Time
	Until     time.Time
	// After skips every dead letter up to this stream sequence: a page's
	// cursor. Each starts reading after it, so a later page does not
	// re-read the earlier ones.
	After uint64
	// Through skips every dead letter after this stream sequence (0: no
	// bound): a purge acts on what its count saw, not on what was
	// written since.
	Through uint64
}

// Match reports whether r passes the filter.
func (f Filter) Match(r *Record) bool {
	switch {
	case f.Sink != "" && r.Sink != f.Sink,
		f.Status != 0 && r.Status != f.Status,
		f.Code != "" && r.Code != f.Code,
		f.Reason != "" && r.Reason != f.Reason,
		f.EventID != "" && r.EventID != f.EventID,
		f.EventType != "" && r.EventType != f.EventType,
		f.After != 0 && r.Seq <= f.After,
		f.Through != 0 && r.Seq > f.Through,
		!f.Since.IsZero() && r.LastAttempt.Before(f.Since),
		!f.Until.IsZero() && r.LastAttempt.After(f.Until):
		return false
	}
	return true
}

// Validate says what in the filter cannot be: a sink is a sink name (as
// config allows one) or - for invalid envelopes, so no filter is ever
// read as a subject wildcard (* or >) or breaks a subject.
func (f Filter) Validate() error {
	if f.Sink != "" && f.Sink != NoSink && !envelope.IsSinkName(f.Sink) {
		return fmt.Errorf("sink: %q is not a sink name: use lower-case letters, digits, - or _ (or - for invalid envelopes)", f.Sink)
	}
	return nil
}

// ErrNotFound is returned for a dead letter that does not exist.
var ErrNotFound = errors.New("no such dead letter")

// Store reads and changes the dead-letter stream.
type Store struct {
	js   jetstream.JetStream
	topo topology.Topology
}

// NewStore opens the topology's dead-letter stream.
func NewStore(js jetstream.JetStream, topo topology.Topology) *Store {
	return &Store{js: js, topo: topo}
}

// List returns dead letters matching f, oldest first, at most limit (0: no
// bound; prefer Each for a stream of unknown size).
func (s *Store) List(ctx context.Context, f Filter, limit int) ([]*Record, error) {
	var out []*Record
	err := s.Each(ctx, f, func(r *Record) bool {
		out = append(out, r)
		return limit == 0 || len(out) < limit
	})
	return out, err
}

// Each calls fn for every dead letter matching f, oldest first, until fn
// returns false. It streams: a stream of a million entries is read a
// batch at a time, never held in memory. It reads what was stored when it
// began: records written meanwhile (a purge's tombstones, a replay that
// failed again) are left to the next read.
// It leaves nothing behind on the server (read.go).
func (s *Store) Each(ctx context.Context, f Filter, fn func(*Record) bool) error {
	if err := f.Validate(); err != nil {
		return err
	}
	stream, err := s.stream(ctx)
	if err != nil {
		return err
	}
	filter := "" // the whole stream: it holds dead letters alone
	info := stream.CachedInfo()
	if f.Sink != "" {
		// One sink's records are on subjects of their own under its
		// subject, and those written before records had their own on
		// the sink's subject itself: a get takes one filter, so while
		// any of the latter remain, read every sink's and match.
		shared := s.topo.DeadLetterSubject(f.Sink)
		if info, err = stream.Info(ctx, jetstream.WithSubjectFilter(shared)); err != nil {
			return fmt.Errorf("dlq: %w", err)
		}
		if info.State.Subjects[shared] == 0 {
			filter = shared + ".>"
		}
	}
	upTo := info.State.LastSeq
	if f.Through != 0 {
		upTo = min(upTo, f.Through)
	}
	if info.State.Msgs == 0 || f.After >= upTo {
		return nil // nothing stored, or nothing after the cursor
	}
	return s.scan(ctx, stream, filter, max(f.After+1, info.State.FirstSeq), upTo, func(m storedMsg) bool {
		r := fromMsg(m.Seq, m.Subject, m.Header, m.Data)
		return r == nil || !f.Match(r) || fn(r)
	})
}

// stream opens the dead-letter stream; a missing one is most often a
// NATS (or a config) no dispatcher has run against, and the error says so.
func (s *Store) stream(ctx context.Context) (jetstream.Stream, error) {
	stream, err := s.js.Stream(ctx, s.topo.DeadLetterStream())
	if err != nil {
		return nil, fmt.Errorf("dlq: open %s (has a dispatcher run against this NATS yet?): %w", s.topo.DeadLetterStream(), err)
	}
	return stream, nil
}

// Get returns the dead letter at a stream sequence.
func (s *Store) Get(ctx context.Context, seq uint64) (*Record, error) {
	stream, err := s.stream(ctx)
	if err != nil {
		return nil, err
	}
	m, err := stream.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("dlq: entry %d: %w (see dispatcher dlq list)", seq, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("dlq: entry %d: %w", seq, err)
	}
	r := fromMsg(m.Sequence, m.Subject, m.Header, m.Data)
	if r == nil {
		return nil, fmt.Errorf("dlq: entry %d was replayed or purged: %w (see dispatcher dlq list)", seq, ErrNotFound)
	}
	return r, nil
}

// remove takes a listed record out of the dead letters, as replayed or
// purged (why), and says whether this call removed it. A record on its own
// subject is replaced by a tombstone (a subject rollup), which keeps that
// subject taken: a sink lagging behind writes no second record of it
// (Writer.Write). One written before records had subjects of their own
// shares its sink's subject and is deleted. Either way a record already
// gone (replayed or purged meanwhile by another command or the console) is
// not an error, and not removed again.
func (s *Store) remove(ctx context.Context, stream jetstream.Stream, r *Record, why string) (bool, error) {
	if r.stored == "" || r.stored == s.topo.DeadLetterSubject(r.Sink) {
		return deleteEntry(ctx, stream, r.Seq, "")
	}
	msg := nats.NewMsg(r.stored)
	msg.Header.Set(hdrTombstone, why)
	msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	// Only over the record read: one removed meanwhile (by a concurrent
	// replay or purge) is left as that one left it.
	_, err := s.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(r.Seq))
	if isTaken(err) {
		return false, nil
	}
	if isFull(err) {
		// The server's storage is spent, and refuses the tombstone like
		// any write: delete the record instead, which frees storage (a
		// purge is how it is freed). Its subject is left empty, so a
		// late second write of it is refused only within the duplicate
		// window; while the storage is full, it is refused anyway.
		return deleteEntry(ctx, stream, r.Seq, " (the storage is full)")
	}
	if err != nil {
		return false, fmt.Errorf("dlq: remove entry %d: %w", r.Seq, err)
	}
	return true, nil
}

// deleteEntry deletes the record at seq and says whether this call did:
// one gone already (removed meanwhile) is not an error. why, if set, is
// said in an error.
func deleteEntry(ctx context.Context, stream jetstream.Stream, seq uint64, why string) (bool, error) {
	err := stream.DeleteMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("dlq: remove entry %d%s: %w", seq, why, err)
	}
	return true, nil
}

// isFull says the server refused a write because its JetStream storage
// is spent (insufficient resources).
func isFull(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	switch apiErr.ErrorCode {
	case errCodeInsufficientResources, errCodeAccountResourcesExceeded, errCodeStorageResourcesExceeded:
		return true
	}
	return false
}

// The server's refusals of a write for want of storage (nats.go names no
// constant for them): its own storage spent (JSInsufficientResourcesErr),
// the account's JetStream quota reached (JSAccountResourcesExceededErr: an
// account with limits of its own, operator mode, a hosted NATS), its
// storage limit for streams (JSStorageResourcesExceededErr).
const (
	errCodeInsufficientResources    jetstream.ErrorCode = 10023
	errCodeAccountResourcesExceeded jetstream.ErrorCode = 10002
	errCodeStorageResourcesExceeded jetstream.ErrorCode = 10047
)

// Stats counts dead letters by a key function.
func (s *Store) Stats(ctx context.Context, f Filter, key func(*Record) string) (map[string]int, int, error) {
	counts := map[string]int{}
	total := 0
	err := s.Each(ctx, f, func(r *Record) bool {
		counts[key(r)]++
		total++
		return true
	})
	return counts, total, err
}

// ReplayOptions bound a replay.
type ReplayOptions struct {
	DryRun bool
	// Rate is replays per second (0: as fast as JetStream confirms).
	Rate  float64
	Limit int
	// Progress, if set, is called after each entry.
	Progress func(done int)
	// Replayed, if set, is called with each record put back on its
	// sink's queue (its Replays is the run before the replay's).
	Replayed func(*Record)
}

// ReplayResult says what a replay did.
type ReplayResult struct {
	Matched  int
	Replayed int
	// Skipped entries cannot be replayed as they are: invalid envelopes,
	// panics, and events whose sink is still not configured; purge them.
	Skipped int
	Sample  []*Record
	// Last is the last matching dead letter's sequence: a filter bounded
	// there (Filter.Through) matches no more than this run did, so a
	// confirmed action acts on what its dry run counted.
	Last uint64
}

// Replay puts matching dead letters back on their failed sink's queue
// only (the sink's due subject in the retries stream), keeping the
// envelope id so vendor de-duplication holds, with a fresh attempt count.
// An entry leaves the dead-letter stream only after JetStream stored its
// replay. The replay's message id names the entry, so a replay interrupted
// between the two steps and run again is stored once, and is then removed.
func (s *Store) Replay(ctx context.Context, f Filter, o ReplayOptions) (ReplayResult, error) {
	var res ReplayResult
	var limiter *rate.Limiter
	if o.Rate > 0 {
		limiter = rate.NewLimiter(rate.Limit(o.Rate), 1)
	}
	stream, err := s.stream(ctx)
	if err != nil {
		return res, err
	}
	known := map[string]bool{}
	var stop error
	err = s.Each(ctx, f, func(r *Record) bool {
		res.Matched++
		res.Last = r.Seq
		if len(res.Sample) < 5 {
			res.Sample = append(res.Sample, r)
		}
		if o.DryRun {
			return o.Limit == 0 || res.Matched < o.Limit
		}
		ok, err := s.replayable(ctx, r, known)
		if err != nil {
			stop = err
			return false
		}
		if !ok {
			res.Skipped++
			return o.Limit == 0 || res.Matched < o.Limit
		}
		if limiter != nil {
			if err := limiter.Wait(ctx); err != nil {
				stop = fmt.Errorf("dlq: replay interrupted: %w", err)
				return false
			}
		}
		queued, err := s.requeue(ctx, r)
		if err != nil {
			stop = err
			return false
		}
		removed, err := s.remove(ctx, stream, r, "replayed")
		if err != nil {
			stop = err
			return false
		}
		if !removed && !queued {
			// Replayed meanwhile by another command or the console: the
			// message id made this requeue a duplicate of that one's,
			// which counts it. (Purged meanwhile instead, after this
			// requeue was stored: queued here, and counted here.)
			return o.Limit == 0 || res.Matched < o.Limit
		}
		res.Replayed++
		if o.Replayed != nil {
			o.Replayed(r)
		}
		if o.Progress != nil {
			o.Progress(res.Replayed)
		}
		return o.Limit == 0 || res.Matched < o.Limit
	})
	if stop != nil {
		return res, stop
	}
	return res, err
}

// replayable says whether r can go back to its sink now: its reason allows
// it and its sink exists in the deployment (an unknown destination may
// have been configured since).
func (s *Store) replayable(ctx context.Context, r *Record, known map[string]bool) (bool, error) {
	if r.Sink == NoSink || r.EventID == "" || !r.Reason.Replayable() {
		return false, nil
	}
	ok, seen := known[r.Sink]
	if !seen {
		var err error
		if ok, err = s.topo.HasSink(ctx, s.js, r.Sink); err != nil {
			return false, err
		}
		known[r.Sink] = ok
	}
	return ok, nil
}

// Requeue puts one dead letter back on its sink's queue, without removing
// it from the dead-letter stream; Replay removes it once this returned. Its
// message id names the entry, so requeueing the same entry twice within the
// duplicate window queues it once.
func (s *Store) Requeue(ctx context.Context, r *Record) error {
	_, err := s.requeue(ctx, r)
	return err
}

// requeue is Requeue, and says whether this call queued the replay: not
// when the server took it for a duplicate of one another command (or the
// console) queued first.
func (s *Store) requeue(ctx context.Context, r *Record) (queued bool, err error) {
	msg := nats.NewMsg(s.topo.RetryDueSubject(r.Sink))
	for k, v := range r.Header {
		if keepHeader(k) {
			msg.Header[k] = v
		}
	}
	msg.Header.Set(topology.HeaderReplays, strconv.Itoa(r.Replays+1))
	// The attempt count starts afresh, but the log goes on: if the replay
	// fails too, its dead letter shows why the event failed before as
	// well as now.
	if log := r.Log.Encode(); log != "" {
		msg.Header.Set(topology.HeaderAttemptLog, log)
	}
	if r.Origin > 0 {
		msg.Header.Set(topology.HeaderOrigin, strconv.FormatUint(r.Origin, 10))
	}
	// The event keeps its first receipt time, which stands for an
	// envelope's missing `time`: without it, the replay would be stamped
	// with the time it entered the retries stream. A record from before
	// receipt times were kept gives its first attempt, the nearest it
	// knows (for an unknown destination, the receipt time itself).
	received := r.Received
	if received.IsZero() {
		received = r.FirstAttempt
	}
	if !received.IsZero() {
		msg.Header.Set(topology.HeaderReceived, received.UTC().Format(time.RFC3339Nano))
	}
	msg.Data = r.Data
	id := fmt.Sprintf("replay/%s/%s/%d", r.EventID, r.Sink, r.Seq)
	ack, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id))
	if err != nil {
		return false, fmt.Errorf("dlq: replay of %s to %s: %w", r.EventID, r.Sink, err)
	}
	return !ack.Duplicate, nil
}

// Purge deletes matching dead letters and returns how many it removed
// (not those another command or the console removed meanwhile).
func (s *Store) Purge(ctx context.Context, f Filter) (int, error) {
	return s.PurgeProgress(ctx, f, nil)
}

// PurgeProgress is Purge that reports the count so far to progress (if not
// nil) after each deletion, for a terminal's progress line.
func (s *Store) PurgeProgress(ctx context.Context, f Filter, progress func(int)) (int, error) {
	stream, err := s.stream(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	var stop error
	err = s.Each(ctx, f, func(r *Record) bool {
		removed, err := s.remove(ctx, stream, r, "purged")
		if err != nil {
			stop = err
			return false
		}
		if !removed {
			return true
		}
		n++
		if progress != nil {
			progress(n)
		}
		return true
	})
	if stop != nil {
		return n, stop
	}
	return n, err
}
