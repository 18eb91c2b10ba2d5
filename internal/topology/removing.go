package topology

// Removing a sink in two phases, so that no event naming it in
// destinations is lost to a dispatcher that still believes in it.
//
// A dispatcher checking an event that names another sink in destinations
// asks whether that sink's events consumer covers it (internal/dispatch,
// starts.go), and believes a consumer it found for SinkBelieved without
// asking again. Deleting the consumer at once would leave those beliefs
// standing: an event stored after the deletion would be judged the
// removed sink's, skipped by every other sink, and delivered or
// dead-lettered by no one. So the removal first marks the consumers
// (RemovingMetadata), then waits RemovalSettle, longer than any belief
// taken before the mark lasts, and only then deletes them (RemoveSink). A
// dispatcher that finds the mark does not believe the consumer beyond the
// stream's last sequence it read before the look-up: an event stored
// later is asked about again, and once the consumer is gone it is
// dead-lettered as unknown_destination (replayable). Events stored while
// the consumer existed are the sink's: its unread backlog, which the
// removal drops and reports.

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// RemovingMetadata is a sink's consumers' metadata key saying that
// `dispatcher sinks remove` is removing the sink, and since when (RFC 3339,
// the remover's clock). A dispatcher that binds a consumer carrying it runs
// the sink, so its config wins: it clears the mark (EnsureSink), and a
// removal still under way finds it cleared, or the dispatcher's presence
// record, and gives up.
const RemovingMetadata = "chapar.removing"

const (
	// SinkBelieved is how long a dispatcher believes a sink's events
	// consumer it found without the mark, without asking again.
	SinkBelieved = 5 * time.Second
	// RemovalSettle is how long a removal waits between marking and
	// deleting: longer than SinkBelieved, with a margin for clocks running
	// at different rates.
	RemovalSettle = SinkBelieved + 2*time.Second
)

// InUseError says a sink is still run by a dispatcher: a removal would
// delete the consumers of a sink a replica still delivers (it would
// recreate them) and purge the retries it scheduled.
type InUseError struct {
	Sink string
	// Replicas are the live presence records naming the sink.
	Replicas []Replica
	// Pulling are consumers with pull requests waiting (a dispatcher of
	// a version without presence records is seen only so).
	Pulling []string
}

func (e *InUseError) Error() string {
	var parts []string
	if len(e.Replicas) > 0 {
		names := make([]string, len(e.Replicas))
		for i, r := range e.Replicas {
			names[i] = r.String()
		}
		parts = append(parts, "run by "+strings.Join(names, "; "))
	}
	if len(e.Pulling) > 0 {
		parts = append(parts, "pull requests waiting on "+strings.Join(e.Pulling, ", "))
	}
	return fmt.Sprintf("a dispatcher is still consuming sink %s (%s): remove the sink from every replica's config "+
		"and roll that out first, then run this again", e.Sink, strings.Join(parts, "; "))
}

// CheckUnused returns an *InUseError if a dispatcher runs the sink: a live
// presence record names it, or a pull request waits on one of its
// consumers.
func (t Topology) CheckUnused(ctx context.Context, js jetstream.JetStream, sink string) error {
	running, err := t.ReplicasRunning(ctx, js, sink)
	if err != nil {
		return err
	}
	f, err := t.Footprint(ctx, js, sink)
	if err != nil {
		return err
	}
	if len(running) > 0 || len(f.Consuming()) > 0 {
		return &InUseError{Sink: sink, Replicas: running, Pulling: f.Consuming()}
	}
	return nil
}

// Retire removes a sink in two phases: it checks that no dispatcher runs
// it, marks its consumers, waits settle (RemovalSettle; a test may pass
// less only where no dispatcher checks destinations), checks again, and
// deletes them and its retries (RemoveSink), returning what was dropped.
//
// Run again after an interruption, it completes the removal. Two removals
// at once both mark and wait; the first deletes, the second finds less or
// nothing to delete. A dispatcher that starts with the sink meanwhile
// writes its presence record before it binds, and its bind clears the
// mark: the removal finds either and stops with an error, the sink kept.
// (A replica whose record and bind both land between the last check and
// the deletion, milliseconds, has its consumers deleted under it: its
// healer recreates them, from where they were.)
func (t Topology) Retire(ctx context.Context, js jetstream.JetStream, sink string, settle time.Duration) (SinkFootprint, error) {
	if err := t.CheckUnused(ctx, js, sink); err != nil {
		return SinkFootprint{Sink: sink}, err
	}
	marked, err := t.markRemoving(ctx, js, sink, time.Now())
	if err != nil {
		return SinkFootprint{Sink: sink}, err
	}
	if marked > 0 {
		wait := time.NewTimer(settle)
		select {
		case <-wait.C:
		case <-ctx.Done():
			wait.Stop()
			return SinkFootprint{Sink: sink}, fmt.Errorf("topology: removal of sink %s interrupted after its consumers were marked; run it again to complete it: %w", sink, ctx.Err())
		}
	}
	if err := t.CheckUnused(ctx, js, sink); err != nil {
		return SinkFootprint{Sink: sink}, fmt.Errorf("topology: removal of sink %s abandoned, nothing deleted: %w", sink, err)
	}
	if err := t.checkStillMarked(ctx, js, sink); err != nil {
		return SinkFootprint{Sink: sink}, err
	}
	return t.RemoveSink(ctx, js, sink)
}

// markRemoving writes RemovingMetadata on each of the sink's events
// consumers, keeping every other key (the fence, the recorded start) and
// the rest of its config, and returns how many it marked. The retries
// consumer is not marked: no dispatcher asks it whether it covers an
// event.
func (t Topology) markRemoving(ctx context.Context, js jetstream.JetStream, sink string, at time.Time) (int, error) {
	marked := 0
	for _, stream := range t.EventsStreams() {
		c, err := js.Consumer(ctx, stream, SinkConsumer(sink))
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return marked, fmt.Errorf("topology: consumer %s on %s: %w", SinkConsumer(sink), stream, err)
		}
		cfg := c.CachedInfo().Config
		if _, ok := cfg.Metadata[RemovingMetadata]; !ok {
			// An earlier, interrupted removal's mark stays: it says since
			// when. Either way the wait starts again.
			cfg.Metadata = maps.Clone(cfg.Metadata)
			if cfg.Metadata == nil {
				cfg.Metadata = map[string]string{}
			}
			cfg.Metadata[RemovingMetadata] = at.UTC().Format(time.RFC3339)
			if _, err := js.UpdateConsumer(ctx, stream, cfg); err != nil {
				return marked, fmt.Errorf("topology: mark consumer %s on %s as being removed: %w", SinkConsumer(sink), stream, err)
			}
		}
		marked++
	}
	return marked, nil
}

// checkStillMarked errors if one of the sink's events consumers lost its
// mark: a dispatcher running the sink bound it meanwhile.
func (t Topology) checkStillMarked(ctx context.Context, js jetstream.JetStream, sink string) error {
	for _, stream := range t.EventsStreams() {
		c, err := js.Consumer(ctx, stream, SinkConsumer(sink))
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			continue // deleted already (a removal run at the same time)
		}
		if err != nil {
			return fmt.Errorf("topology: consumer %s on %s: %w", SinkConsumer(sink), stream, err)
		}
		if _, ok := c.CachedInfo().Config.Metadata[RemovingMetadata]; !ok {
			return fmt.Errorf("topology: removal of sink %s abandoned, nothing deleted: a dispatcher running the sink bound %s on %s "+
				"during the removal (and cleared its mark); remove the sink from every replica's config, roll that out, then run this again",
				sink, SinkConsumer(sink), stream)
		}
	}
	return nil
}

// Removing reports a consumer's removal mark: the time it was written.
func Removing(info *jetstream.ConsumerInfo) (string, bool) {
	v, ok := info.Config.Metadata[RemovingMetadata]
	return v, ok
}

// unmarked is cfg's metadata without the removal mark, and the mark.
func unmarked(md map[string]string) (map[string]string, string) {
	v, ok := md[RemovingMetadata]
	if !ok {
		return md, ""
	}
	md = maps.Clone(md)
	delete(md, RemovingMetadata)
	return md, v
}

// Reclaim is for a dispatcher that runs the sink and finds its consumers
// marked (RemovingMetadata) after it bound them: it does what its bind
// does to a marked consumer, clears the mark and writes its fence, on
// each of the sink's events consumers, and returns how many it reclaimed.
// The mark's write is a read-modify-write of the consumer's config: a
// bind landing between its read and its write is overwritten, leaving
// the mark and the fence read before the bind, a config no replica may
// run any more, which would fence the replica out of the sink it alone
// runs. A removal under way finds the mark cleared and gives up.
//
// filter is the replica's own (the one it bound with): written with its
// fence, so the consumer never carries this replica's fence with another
// config's, possibly narrower, filter.
func (t Topology) Reclaim(ctx context.Context, js jetstream.JetStream, sink, fence string, filter EventFilter) (int, error) {
	n := 0
	for i, stream := range t.EventsStreams() {
		c, err := js.Consumer(ctx, stream, SinkConsumer(sink))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue // its healer recreates it
		}
		if err != nil {
			return n, fmt.Errorf("topology: consumer %s on %s: %w", SinkConsumer(sink), stream, err)
		}
		cfg := c.CachedInfo().Config
		if _, ok := cfg.Metadata[RemovingMetadata]; !ok {
			continue
		}
		cfg.Metadata, _ = unmarked(cfg.Metadata)
		if fence != "" {
			cfg.Metadata = maps.Clone(cfg.Metadata)
			cfg.Metadata[FenceMetadata] = fence
			setFilter(&cfg, t.FilterSubjects(i, filter))
		}
		if _, err := js.UpdateConsumer(ctx, stream, cfg); err != nil {
			return n, fmt.Errorf("topology: clear the removal mark of consumer %s on %s: %w", SinkConsumer(sink), stream, err)
		}
		n++
	}
	return n, nil
}
