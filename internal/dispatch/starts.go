package dispatch

// Which sink covers which events: a sink's events consumer on a partition
// starts at a fixed stream sequence (topology.StartOf), so whether an
// event is a named sink's to deliver is a question of the event's
// position, with one answer whoever asks and whenever.

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

const (
	// startsTTL is how long a sink found in the deployment is believed
	// without asking again: its start never changes, but the sink may be
	// removed (dispatcher sinks remove), after which events naming it are
	// dead-lettered again. The removal marks the consumers and waits longer
	// than this before it deletes them (topology.Retire); a consumer found
	// marked is believed only for the events stored before the look-up.
	startsTTL = topology.SinkBelieved
	// absentEvery bounds how often one missing sink is asked about: a
	// flood of events naming it costs no flood of API requests.
	absentEvery = 250 * time.Millisecond
	// maxStarts bounds the cache (destination names are the producers').
	maxStarts = 10_000
	// healingGrace is how long a sink whose events consumer is missing
	// while its retries consumer is there is taken to be healing (its
	// healer recreates it, with the start it had: heal.go) before it is
	// taken to be gone: the healer looks every 5 s, lets a loss settle a
	// second and retries with backoff.
	healingGrace = 30 * time.Second
)

// errConsumerHealing says a sink's events consumer is missing but the sink
// is not: its retries consumer is there, so the events consumer is being
// recreated, with its old start. Whether it covers an event cannot be
// told until it is back.
var errConsumerHealing = errors.New("the sink's events consumer is missing while its retries consumer is there (being recreated?)")

type sinkPartition struct {
	sink      string
	partition int
}

// startEntry is what one lookup found: the sink's consumer and its start,
// or no consumer while the stream's last sequence was upto, so every
// event up to upto is below any start the sink gets later. upto is read
// before the consumer is looked up, so a consumer found (present) existed
// when every event up to upto was stored: those at or above its start
// are in its backlog, to be delivered or dropped by a removal, whatever
// happens to it later. Beyond upto a present answer holds only while the
// consumer is not being removed: removing (the removal's mark) is never
// believed past upto.
type startEntry struct {
	present  bool
	removing bool
	start    uint64
	upto     uint64
	// at is when the look-up began: a belief lasts startsTTL from before
	// the server was asked, however slow its answer.
	at time.Time
	// filters are the consumer's subject filters (topology.FiltersOf;
	// none: the whole stream): which events it is delivered.
	filters []string
}

// localSink is what a sink this process runs bound: per partition, its
// consumer's start and filters.
type localSink struct {
	starts  []uint64
	filters [][]string
	// fenced, once set (fencedBy), says another config owns the sink: its
	// consumer then carries that config's filters, not the ones bound
	// here, so they are looked up (a narrowed filter believed wide would
	// let an event the sink never reads go undead-lettered).
	fenced func() bool
}

// sinkStarts caches the starts of the deployment's sinks, per partition.
type sinkStarts struct {
	mu     sync.Mutex
	mine   map[string]localSink // this process's sinks, as bound
	looked map[sinkPartition]startEntry
	// healing is when a sink's events consumer was first found missing
	// while its retries consumer was there (errConsumerHealing).
	healing map[sinkPartition]time.Time
}

func newSinkStarts() *sinkStarts {
	return &sinkStarts{mine: map[string]localSink{}, looked: map[sinkPartition]startEntry{}, healing: map[sinkPartition]time.Time{}}
}

// local records the starts of a sink this process runs, from its consumers
// (in partition order) as bound.
func (s *sinkStarts) local(sink string, events []jetstream.Consumer) error {
	l := localSink{starts: make([]uint64, len(events)), filters: make([][]string, len(events))}
	for i, c := range events {
		var err error
		if l.starts[i], err = topology.StartOf(c.CachedInfo()); err != nil {
			return err
		}
		l.filters[i] = topology.FiltersOf(c.CachedInfo().Config)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mine[sink] = l
	return nil
}

// fencedBy tells the starts of a sink this process runs whether its
// config is fenced off it (fence.fenced).
func (s *sinkStarts) fencedBy(sink string, fenced func() bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.mine[sink]; ok {
		l.fenced = fenced
		s.mine[sink] = l
	}
}

// covers reports whether sink's events consumer on partition covers the
// event at seq there: the sink exists in the deployment and was there
// from before the event. filters are that consumer's subject filters
// (none: the whole stream), as bound (a sink of this process) or as last
// looked up: whether it is delivered the event at all.
func (s *sinkStarts) covers(ctx context.Context, js jetstream.JetStream, topo topology.Topology, sink string, partition int, seq uint64) (covered bool, filters []string, err error) {
	if !envelope.IsSinkName(sink) {
		return false, nil, nil
	}
	key := sinkPartition{sink, partition}
	s.mu.Lock()
	mine, isMine := s.mine[sink]
	e, seen := s.looked[key]
	s.mu.Unlock()
	if isMine && partition < len(mine.starts) && (mine.fenced == nil || !mine.fenced()) {
		return seq >= mine.starts[partition], mine.filters[partition], nil
	}
	if seen {
		switch {
		case e.present && time.Since(e.at) < startsTTL && (!e.removing || seq <= e.upto):
			return seq >= e.start, e.filters, nil
		case !e.present && seq <= e.upto:
			return false, nil, nil // below any start the sink gets
		case !e.present, e.removing && time.Since(e.at) < startsTTL:
			// Ask again, but not more often than absentEvery: a flood of
			// events naming a missing or departing sink costs no flood of
			// API requests.
			if err := sleep(ctx, absentEvery-time.Since(e.at), nil); err != nil {
				return false, nil, err
			}
		}
	}
	e, err = lookUpStart(ctx, js, topo, sink, partition)
	if errors.Is(err, errConsumerHealing) {
		// Believed absent now, an event the healed consumer delivers
		// would be dead-lettered as well: ask again (the caller hands
		// back, or waits in place), unless it stays missing for longer
		// than a healer takes.
		s.mu.Lock()
		if len(s.healing) > maxStarts {
			clear(s.healing)
		}
		since, ok := s.healing[key]
		if !ok {
			since = time.Now()
			s.healing[key] = since
		}
		s.mu.Unlock()
		if time.Since(since) < healingGrace {
			return false, nil, err
		}
		err = nil
	}
	if err != nil {
		return false, nil, err
	}
	s.mu.Lock()
	if len(s.looked) > maxStarts {
		clear(s.looked)
	}
	s.looked[key] = e
	if e.present {
		delete(s.healing, key)
	}
	s.mu.Unlock()
	switch {
	case e.present && (!e.removing || seq <= e.upto):
		return seq >= e.start, e.filters, nil
	case e.present:
		// Marked, and the event is past what the look-up covers: only a
		// stream answering from the past gets here.
		return false, nil, fmt.Errorf("sink %q: event %d of partition %d is past the stream's last sequence %d", sink, seq, partition, e.upto)
	case seq <= e.upto:
		return false, nil, nil
	}
	// The event was stored before the stream's last sequence was read:
	// only a stream answering from the past gets here.
	return false, nil, fmt.Errorf("sink %q: event %d of partition %d is past the stream's last sequence %d", sink, seq, partition, e.upto)
}

// lookUpStart asks the server. The stream's last sequence is read before
// the consumer is looked up: if there is no consumer then, every event up
// to that sequence was stored before the sink's, whose start the server
// sets past the stream's last sequence when it creates it.
func lookUpStart(ctx context.Context, js jetstream.JetStream, topo topology.Topology, sink string, partition int) (startEntry, error) {
	began := time.Now()
	lctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	defer cancel()
	stream := topo.EventsStreamOf(partition)
	st, err := js.Stream(lctx, stream)
	if err != nil {
		return startEntry{}, fmt.Errorf("look up %s: %w", stream, err)
	}
	upto := st.CachedInfo().State.LastSeq
	c, err := js.Consumer(lctx, stream, topology.SinkConsumer(sink))
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		absent := startEntry{upto: upto, at: began}
		// The sink itself may still be there, its events consumer lost
		// and being recreated from where it was (heal.go).
		has, err := topo.HasSink(lctx, js, sink)
		if err != nil {
			return startEntry{}, err
		}
		if has {
			return absent, errConsumerHealing
		}
		return absent, nil
	}
	if err != nil {
		return startEntry{}, fmt.Errorf("look up sink %s on %s: %w", sink, stream, err)
	}
	start, err := topology.StartOf(c.CachedInfo())
	if err != nil {
		return startEntry{}, err
	}
	_, removing := topology.Removing(c.CachedInfo())
	return startEntry{present: true, removing: removing, start: start, upto: upto, at: began,
		filters: topology.FiltersOf(c.CachedInfo().Config)}, nil
}
