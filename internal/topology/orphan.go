package topology

// A fence no running replica holds. The last replica to bind a sink owns
// it (its fence on the sink's events consumers, dispatch's fence.go), and
// a replica of another config stays off the sink while it does. If the
// fence's config is gone (every replica running it stopped: a canary
// stopped without the others restarting), or no config ever ran it (a
// read-modify-write of the consumer's config, RestoreLead's or a removal
// mark's, that put back a fence read before a bind: JetStream has no
// compare-and-set on a consumer's config), nobody consumes the sink until
// a replica binds it. A fenced-off replica asks OrphanedFence and says so
// in its log; it does not take the sink back itself, since an owner cut
// off from NATS (its presence record expired, not pulling) looks the
// same, and taking the sink from it would ack as skips what its routes
// deliver.

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/nats-io/nats.go/jetstream"
)

// OrphanedFence says whether no running replica can hold fence on sink's
// events consumers, as the presence records and the consumers say, asked
// by replica self:
//
//   - self's own record, with its fences, is in the bucket: else the
//     bucket is not being written, and shows no owner either;
//   - every other live replica that runs the sink recorded the fences it
//     bound with (Replica.Fences), and none is fence: one that has not
//     (binding still, or a version before fences were recorded) may hold
//     it;
//   - no events consumer of the sink has a pull request waiting: a
//     replica pulling it owns it (a fenced-off one pulls nothing);
//   - the consumers still carry fence.
//
// A replica killed without deleting its record counts until the record
// expires (ReplicaTTL).
func (t Topology) OrphanedFence(ctx context.Context, js jetstream.JetStream, sink, fence, self string) (bool, error) {
	running, err := t.ReplicasRunning(ctx, js, sink)
	if err != nil {
		return false, err
	}
	if !slices.ContainsFunc(running, func(r Replica) bool { return r.ID == self && r.Fences != nil }) {
		return false, nil
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
