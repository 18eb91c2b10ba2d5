package deliveries

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	"github.com/nats-io/nats.go"

	"github.com/chapar-dev/chapar/internal/jsread"
)

// Lookup returns an event's deliveries: each sink's latest record, sorted
// by sink. None (and no error) means no sink recorded anything of it
// within the stream's retention. It is one batched direct get on the
// subject of the event's bucket, no consumer: the server sends the
// bucket's records of every event (about 2 × events stored / 65,536 with
// two sinks), and those of other events are skipped here by their id.
func Lookup(ctx context.Context, nc *nats.Conn, stream, prefix, eventID string) ([]Record, error) {
	latest := map[string]Record{}
	var bad error
	err := jsread.Scan(ctx, nc, stream, Subject(prefix, eventID), jsread.From{}, 0, "delivery records", func(m jsread.Msg) bool {
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
