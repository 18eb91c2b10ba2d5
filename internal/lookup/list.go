package lookup

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/deliveries"
	"github.com/chapar-dev/chapar/internal/jsread"
	"github.com/chapar-dev/chapar/internal/topology"
)

// Filter chooses the deliveries a list shows; a zero field matches all.
type Filter struct {
	// Since and Until bound when a delivery's first record was written
	// (Since zero: the oldest kept).
	Since, Until time.Time
	// After continues a list: only records after this sequence of the
	// deliveries stream (the last Entry.Seq of the page before).
	After   uint64
	Sink    string
	Type    string
	Name    string
	Subject string
	State   State
}

// Entry is one delivery in a list: its latest state.
type Entry struct {
	// Seq is where the delivery's first record in the window is stored
	// in the deliveries stream: the --after of the next page.
	Seq uint64 `json:"seq"`
	deliveries.Record
}

// List calls each with every delivery whose records match f, in the
// order their first record in the window was written, with its latest
// state, until each returns false. It streams: an entry is passed as soon
// as it is read, and the list reads nothing past where each stopped.
// Reads are direct gets from the first record at or after f.Since: no
// consumer is made.
func List(ctx context.Context, js jetstream.JetStream, cfg *config.Config, f Filter, each func(Entry) bool) error {
	topo := topology.New(cfg.Streams)
	if !cfg.Streams.RecordDeliveries {
		return fmt.Errorf("lookup: streams.record_deliveries is off in this config, so no delivery is recorded")
	}
	stream := topo.DeliveriesStream()
	from := jsread.From{Seq: f.After + 1}
	if f.After == 0 && !f.Since.IsZero() {
		from = jsread.From{Time: f.Since}
	}
	// A delivery with several records (retrying, then delivered) is
	// listed once, at its first, with the state of its latest.
	seen := map[[2]string]bool{}
	latest := map[string][]deliveries.Record{} // by event id: a lookup's answer, kept for the list
	var failed error
	err := jsread.Scan(ctx, js.Conn(), stream, deliveries.Subjects(topo.Prefix()), from, 0, "delivery records", func(m jsread.Msg) bool {
		var r deliveries.Record
		if json.Unmarshal(m.Data, &r) != nil {
			return true
		}
		if !f.Until.IsZero() && r.At.After(f.Until) {
			return false // records are written in time order, give or take the replicas' clocks
		}
		key := [2]string{r.EventID, r.Sink}
		if seen[key] || !f.matches(r) {
			return true
		}
		seen[key] = true
		recs, ok := latest[r.EventID]
		if !ok {
			rctx, cancel := context.WithTimeout(ctx, readWait)
			var err error
			// Its latest record of any listed sink is this one or later.
			recs, err = deliveries.Lookup(rctx, js.Conn(), stream, topo.Prefix(), r.EventID, jsread.From{Seq: m.Seq})
			cancel()
			if err != nil {
				failed = err
				return false
			}
			latest[r.EventID] = recs
		}
		for _, l := range recs {
			if l.Sink == r.Sink {
				r = l
			}
		}
		if f.State != "" && State(r.State) != f.State {
			return true
		}
		return each(Entry{Seq: m.Seq, Record: r})
	})
	if err == nil {
		err = failed
	}
	if err != nil {
		return fmt.Errorf("lookup: %w", err)
	}
	return nil
}

func (f Filter) matches(r deliveries.Record) bool {
	return (f.Sink == "" || r.Sink == f.Sink) && (f.Type == "" || r.Type == f.Type) &&
		(f.Name == "" || r.Name == f.Name) && (f.Subject == "" || r.Subject == f.Subject)
}
