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

	"github.com/chapar-dev/chapar/internal/topology"
)

// Filter selects dead letters; zero fields match everything.
type Filter struct {
	Sink    string
	Status  int
	Code    string
	Reason  string
	EventID string
	Since   time.Time
	Until   time.Time
}

// Match reports whether r passes the filter.
func (f Filter) Match(r *Record) bool {
	switch {
	case f.Sink != "" && r.Sink != f.Sink,
		f.Status != 0 && r.Status != f.Status,
		f.Code != "" && r.Code != f.Code,
		f.Reason != "" && r.Reason != f.Reason,
		f.EventID != "" && r.EventID != f.EventID,
		!f.Since.IsZero() && r.LastAttempt.Before(f.Since),
		!f.Until.IsZero() && r.LastAttempt.After(f.Until):
		return false
	}
	return true
}

// Store reads and changes the dead-letter stream.
type Store struct {
	js   jetstream.JetStream
	topo topology.Topology
}

// NewStore opens the topology's dead-letter stream.
func NewStore(js jetstream.JetStream, topo topology.Topology) *Store {
	return &Store{js: js, topo: topo}
}

// List returns every dead letter matching f, oldest first. limit bounds the
// result (0: no bound).
func (s *Store) List(ctx context.Context, f Filter, limit int) ([]*Record, error) {
	var out []*Record
	err := s.scan(ctx, f, func(r *Record) bool {
		out = append(out, r)
		return limit == 0 || len(out) < limit
	})
	return out, err
}

// scan walks the stream with an ordered (ephemeral, server-side filtered)
// consumer, calling fn for each match until fn returns false.
func (s *Store) scan(ctx context.Context, f Filter, fn func(*Record) bool) error {
	stream, err := s.js.Stream(ctx, s.topo.DeadLetterStream())
	if err != nil {
		return fmt.Errorf("dlq: open %s (has a dispatcher run against this NATS yet?): %w", s.topo.DeadLetterStream(), err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	if info.State.Msgs == 0 {
		return nil
	}
	subject := s.topo.DeadLetterSubjects()
	if f.Sink != "" {
		subject = s.topo.DeadLetterSubject(f.Sink)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	ci, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	// Everything to read is already stored: fetch without waiting until
	// NumPending says it is all read.
	remaining, empty := ci.NumPending, 0
	for remaining > 0 {
		batch, err := cons.FetchNoWait(256)
		if err != nil {
			return fmt.Errorf("dlq: %w", err)
		}
		n := 0
		for msg := range batch.Messages() {
			n++
			meta, err := msg.Metadata()
			if err != nil {
				return fmt.Errorf("dlq: %w", err)
			}
			remaining = meta.NumPending
			r := fromMsg(meta.Sequence.Stream, msg.Headers(), msg.Data())
			if f.Match(r) && !fn(r) {
				return nil
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return fmt.Errorf("dlq: %w", err)
		}
		if n == 0 {
			if empty++; empty > 50 {
				return fmt.Errorf("dlq: %d entries pending but none arrive", remaining)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// Get returns the dead letter at a stream sequence.
func (s *Store) Get(ctx context.Context, seq uint64) (*Record, error) {
	stream, err := s.js.Stream(ctx, s.topo.DeadLetterStream())
	if err != nil {
		return nil, fmt.Errorf("dlq: %w", err)
	}
	m, err := stream.GetMsg(ctx, seq)
	if err != nil {
		return nil, fmt.Errorf("dlq: entry %d: %w", seq, err)
	}
	return fromMsg(m.Sequence, m.Header, m.Data), nil
}

// Stats counts dead letters by a key function.
func (s *Store) Stats(ctx context.Context, f Filter, key func(*Record) string) (map[string]int, int, error) {
	counts := map[string]int{}
	total := 0
	err := s.scan(ctx, f, func(r *Record) bool {
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
	Progress func(done, total int)
}

// ReplayResult says what a replay did.
type ReplayResult struct {
	Matched  int
	Replayed int
	// Skipped entries cannot be replayed as they are: invalid envelopes and
	// events whose sink is not configured; purge them.
	Skipped int
	Sample  []*Record
}

// Replay puts matching dead letters back on their failed sink's queue
// only, keeping the envelope id so vendor de-duplication holds. An entry
// leaves the dead-letter stream only after JetStream accepted its replay;
// the replay's message id is fixed per (event, sink, replay count), so a
// replay interrupted between the two steps and run again is de-duplicated.
func (s *Store) Replay(ctx context.Context, f Filter, o ReplayOptions) (ReplayResult, error) {
	recs, err := s.List(ctx, f, o.Limit)
	if err != nil {
		return ReplayResult{}, err
	}
	res := ReplayResult{Matched: len(recs)}
	res.Sample = recs[:min(len(recs), 5)]
	if o.DryRun {
		return res, nil
	}
	var limiter *rate.Limiter
	if o.Rate > 0 {
		limiter = rate.NewLimiter(rate.Limit(o.Rate), 1)
	}
	stream, err := s.js.Stream(ctx, s.topo.DeadLetterStream())
	if err != nil {
		return res, fmt.Errorf("dlq: %w", err)
	}
	for i, r := range recs {
		if r.Sink == NoSink || r.EventID == "" || r.Reason == "unknown_destination" {
			res.Skipped++
			continue
		}
		if limiter != nil {
			if err := limiter.Wait(ctx); err != nil {
				return res, fmt.Errorf("dlq: replay interrupted: %w", err)
			}
		}
		if err := s.Requeue(ctx, r); err != nil {
			return res, err
		}
		if err := stream.DeleteMsg(ctx, r.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return res, fmt.Errorf("dlq: remove replayed entry %d: %w", r.Seq, err)
		}
		res.Replayed++
		if o.Progress != nil {
			o.Progress(i+1, len(recs))
		}
	}
	return res, nil
}

// Requeue puts one dead letter back on its sink's queue, without removing
// it from the dead-letter stream; Replay removes it once this returned. Its
// message id is fixed per (event, sink, replay count), so requeueing the same
// entry twice within the duplicate window queues it once.
func (s *Store) Requeue(ctx context.Context, r *Record) error {
	msg := nats.NewMsg(s.topo.DeliverSubject(r.Sink))
	for k, v := range r.Header {
		msg.Header[k] = v
	}
	n := r.Replays + 1
	msg.Header.Set(topology.HeaderReplays, strconv.Itoa(n))
	msg.Data = r.Data
	id := fmt.Sprintf("%s/replay-%d", topology.DeliveryMsgID(r.EventID, r.Sink), n)
	if _, err := s.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id)); err != nil {
		return fmt.Errorf("dlq: replay of %s to %s: %w", r.EventID, r.Sink, err)
	}
	return nil
}

// Purge deletes matching dead letters and returns how many.
func (s *Store) Purge(ctx context.Context, f Filter) (int, error) {
	recs, err := s.List(ctx, f, 0)
	if err != nil {
		return 0, err
	}
	stream, err := s.js.Stream(ctx, s.topo.DeadLetterStream())
	if err != nil {
		return 0, fmt.Errorf("dlq: %w", err)
	}
	n := 0
	for _, r := range recs {
		if err := stream.DeleteMsg(ctx, r.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			return n, fmt.Errorf("dlq: purge entry %d: %w", r.Seq, err)
		}
		n++
	}
	return n, nil
}
