package deliveries

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/google/uuid"

	"github.com/nats-io/nats.go"

	"github.com/chapar-dev/chapar/internal/jsread"
)

// Lookup returns an event's deliveries: each sink's latest record, sorted
// by sink. None (and no error) means no sink recorded anything of it
// within the stream's retention, from from on. It is one batched direct
// get on the subject of the event's bucket, no consumer: the server sends
// the bucket's records of every event (about 2 × events stored / 65,536
// with two sinks), and those of other events are skipped here by their id.
//
// A bucket's records are in every block of the stream, so what a lookup
// costs grows with what is stored after from: a caller that knows when
// the event's records can start (a list that met one, a replay's start,
// the time in an id: Since) passes it; the zero From reads them all.
func Lookup(ctx context.Context, nc *nats.Conn, stream, prefix, eventID string, from jsread.From) ([]Record, error) {
	latest := map[string]Record{}
	var bad error
	err := jsread.Scan(ctx, nc, stream, Subject(prefix, eventID), from, 0, "delivery records", func(m jsread.Msg) bool {
		var r Record
		if err := json.Unmarshal(m.Data, &r); err != nil {
			bad = fmt.Errorf("deliveries: record #%d of %s is not readable: %w", m.Seq, stream, err)
			return true
		}
		if r.EventID != eventID {
			return true // another event of the bucket
		}
		// Records of one subject come in stream order: an event's last
		// of a sink is its latest.
		latest[r.Sink] = r
		return true
	})
	if err != nil {
		return nil, fmt.Errorf("deliveries: %w", err)
	}
	out := make([]Record, 0, len(latest))
	for _, r := range latest {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Sink < out[j].Sink })
	if len(out) == 0 && bad != nil {
		return nil, bad
	}
	return out, nil
}

// idClockSlack is how far a producer's clock may run ahead of the
// servers' for Since: records stamped earlier than an id's time by more
// than this are not found from it (Show then reads them all).
const idClockSlack = time.Hour

// Since is where an event's records can start, read from its id: a
// version 7 UUID (what envelope.New and Chapar's publisher make) carries
// the time it was made, and the event's records are written after it was
// stored, so after that time (less idClockSlack for a producer's clock
// ahead of the servers'). Any other id gives the zero From: every record.
func Since(eventID string) jsread.From {
	u, err := uuid.Parse(eventID)
	if err != nil || u.Version() != 7 {
		return jsread.From{}
	}
	sec, nsec := u.Time().UnixTime()
	return jsread.From{Time: time.Unix(sec, nsec).Add(-idClockSlack)}
}
