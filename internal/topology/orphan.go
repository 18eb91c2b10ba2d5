package topology

// A fence no running replica holds. The last replica to bind a sink owns
// it (its fence on the sink's events consumers, dispatch's fence.go), and
// a replica of another config stays off the sink while it does. If the
// fence's config is gone (every replica running it stopped: a canary
// stopped without the others restarting), or no config ever ran it (a
// read-modify-write of the consumer's config, RestoreLead's or a removal
// mark's, that put back a fence read before a bind: JetStream has no
// compare-and-set on a consumer's config), nobody consumes the sink until
// a replica restarts. So a fenced-off replica asks whether the fence is
// orphaned (OrphanedFence) and, if it is, takes the sink back
// (TakeFence).

import (
	"context"
	"errors"
	"fmt"
	"maps"

	"github.com/nats-io/nats.go/jetstream"
)

// OrphanedFence says whether no running replica can hold fence on sink's
// events consumers, as the presence records and the consumers say:
//
//   - every live replica that runs the sink recorded the fences it bound
//     with (Replica.Fences), and none is fence: one that has not (binding
//     still, or a version before fences were recorded) may hold it;
//   - no events consumer of the sink has a pull request waiting: a
//     replica pulling it owns it (a fenced-off one pulls nothing), even
//     with its presence record gone (the replicas bucket unwritable);
//   - the consumers still carry fence.
//
// A replica killed without deleting its record counts until the record
// expires (ReplicaTTL).
func (t Topology) OrphanedFence(ctx context.Context, js jetstream.JetStream, sink, fence string) (bool, error) {
	running, err := t.ReplicasRunning(ctx, js, sink)
	if err != nil {
		return false, err
	}
	for _, r := range running {
		held, known := r.Fences[sink]
		if !known || held == fence {
			return false, nil
		}
	}
	for _, stream := range t.EventsStreams() {
		c, err := js.Consumer(ctx, stream, SinkConsumer(sink))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue // its healer recreates it, with the last owner's fence
		}
		if err != nil {
			return false, fmt.Errorf("topology: consumer %s on %s: %w", SinkConsumer(sink), stream, err)
		}
		info := c.CachedInfo()
		if info.NumWaiting > 0 || info.Config.Metadata[FenceMetadata] != fence {
			return false, nil
		}
	}
	return true, nil
}

// TakeFence writes fence, with filter (the replica's own, bound with it),
// on each of sink's events consumers that still carries orphan, and
// returns how many it changed. A consumer marked for removal is left to
// Reclaim, and one whose lead mark is not lead (what the replica bound
// it as) is left as it is: the replica would judge a lead's reads as a
// sink's, or the other way round. A read-modify-write, as every change
// of a consumer's config: a bind landing between the read and the write
// is overwritten, and that replica finds its fence gone and, its config
// running (its presence record), stays off the sink; the window is one
// round trip, and only a fence already orphaned opens it.
func (t Topology) TakeFence(ctx context.Context, js jetstream.JetStream, sink, orphan, fence string, filter EventFilter, lead bool) (int, error) {
	n := 0
	for i, stream := range t.EventsStreams() {
		c, err := js.Consumer(ctx, stream, SinkConsumer(sink))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("topology: consumer %s on %s: %w", SinkConsumer(sink), stream, err)
		}
		info := c.CachedInfo()
		if _, marked := Removing(info); marked || IsLead(info) != lead || info.Config.Metadata[FenceMetadata] != orphan {
			continue
		}
		cfg := info.Config
		cfg.Metadata = maps.Clone(cfg.Metadata)
		cfg.Metadata[FenceMetadata] = fence
		setFilter(&cfg, t.FilterSubjects(i, filter))
		if _, err := js.UpdateConsumer(ctx, stream, cfg); err != nil {
			return n, fmt.Errorf("topology: take back consumer %s on %s: %w", SinkConsumer(sink), stream, err)
		}
		n++
	}
	return n, nil
}
