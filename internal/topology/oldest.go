package topology

import (
	"cmp"
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// OldestPending is the age of the oldest message a consumer has not
// acked: the first one of its filter past its ack floor (every message up
// to the floor is acked; skipped and deleted ones are passed over). ok is
// false when it cannot be read, and the age 0 when nothing is waiting.
// The events streams keep a message for max_age whether it was acked or
// not, so this age against max_age is how near a consumer is to losing
// its backlog: the metrics report it (chapar_consumer_oldest_pending_seconds)
// and a paused sink's rescue watches it (internal/dispatch, rescue.go).
func OldestPending(ctx context.Context, st jetstream.Stream, info *jetstream.ConsumerInfo, now time.Time) (time.Duration, bool) {
	if info.NumPending == 0 && info.NumAckPending == 0 {
		return 0, true
	}
	if st == nil {
		return 0, false
	}
	// A sink reading only its routes' types has several filters (one per
	// type, and the direct subjects): its oldest is the earliest of each
	// one's first message past the floor.
	filters := info.Config.FilterSubjects
	if info.Config.FilterSubject != "" || len(filters) == 0 {
		filters = []string{cmp.Or(info.Config.FilterSubject, ">")}
	}
	var oldest *jetstream.RawStreamMsg
	for _, f := range filters {
		msg, err := st.GetMsg(ctx, info.AckFloor.Stream+1, jetstream.WithGetMsgSubject(f))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // none of this subject past the floor
		}
		if err != nil {
			return 0, false
		}
		if oldest == nil || msg.Sequence < oldest.Sequence {
			oldest = msg
		}
	}
	if oldest == nil {
		return 0, false
	}
	return max(0, now.Sub(oldest.Time)), true
}

// MaxAge is the events streams' max_age as configured (0: no limit).
func (t Topology) MaxAge() time.Duration { return t.cfg.MaxAge }
