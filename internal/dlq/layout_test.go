package dlq_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// A replayed or purged record leaves its subject taken: the same (event,
// sink, replay) written again after the duplicate window (a sink lagging
// behind) is not stored a second time, while a replay's own failure (the
// next replay count) is.
func TestRemovedRecordIsNotWrittenAgain(t *testing.T) {
	e := testenv.New(t)
	e.Streams.DuplicateWindow = time.Second
	e.Topo = topology.New(e.Streams)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.Topo.Ensure(ctx, e.JS); err != nil {
		t.Fatal(err)
	}
	// The sink must exist for a replay to requeue the record.
	if _, err := e.Topo.EnsureSink(ctx, e.JS, "chabok", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 100}); err != nil {
		t.Fatal(err)
	}
	w, st := dlq.NewWriter(e.JS, e.Topo), dlq.NewStore(e.JS, e.Topo)
	rec := func(id string, replays int) *dlq.Record {
		return &dlq.Record{Sink: "chabok", Reason: outcome.UnknownDestination, EventID: id, Origin: 7, Replays: replays, LastAttempt: time.Now()}
	}
	for _, id := range []string{"replayed", "purged"} {
		if dup, err := w.Write(ctx, rec(id, 0)); err != nil || dup {
			t.Fatalf("first write of %s: duplicate %v, %v", id, dup, err)
		}
	}
	if res, err := st.Replay(ctx, dlq.Filter{EventID: "replayed"}, dlq.ReplayOptions{}); err != nil || res.Replayed != 1 {
		t.Fatalf("replay: %+v %v", res, err)
	}
	if n, err := st.Purge(ctx, dlq.Filter{EventID: "purged"}); err != nil || n != 1 {
		t.Fatalf("purge: %d %v", n, err)
	}
	time.Sleep(e.Streams.DuplicateWindow + 500*time.Millisecond) // past the window: only the subject holds
	for _, id := range []string{"replayed", "purged"} {
		if dup, err := w.Write(ctx, rec(id, 0)); err != nil || !dup {
			t.Errorf("late second write of %s: duplicate %v, %v; want a duplicate", id, dup, err)
		}
	}
	if dup, err := w.Write(ctx, rec("replayed", 1)); err != nil || dup {
		t.Errorf("the replay's own failure: duplicate %v, %v; want it stored", dup, err)
	}
	recs, err := st.List(ctx, dlq.Filter{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].EventID != "replayed" || recs[0].Replays != 1 {
		t.Errorf("listed %d records (%+v), want the replay's failure alone", len(recs), recs)
	}
}

// Records written before each had a subject of its own (all of a sink's
// on <P>.dlq.<sink>) are still listed, filtered, replayed and purged one by
// one, beside new ones.
func TestRecordsOfTheOlderLayout(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.Topo.EnsureSink(ctx, e.JS, "chabok", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 100}); err != nil {
		t.Fatal(err)
	}
	// As the writer before this layout stored them.
	for i := range 3 {
		m := nats.NewMsg(e.Topo.DeadLetterSubject("chabok"))
		m.Header.Set("Chapar-DLQ-Sink", "chabok")
		m.Header.Set("Chapar-DLQ-Reason", string(outcome.VendorRejected))
		m.Header.Set("Chapar-DLQ-Event-Id", "old-"+strconv.Itoa(i))
		m.Header.Set(topology.HeaderOrigin, strconv.Itoa(i+1))
		m.Data = []byte(`{}`)
		if _, err := e.JS.PublishMsg(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dlq.NewWriter(e.JS, e.Topo).Write(ctx, &dlq.Record{Sink: "chabok", Reason: outcome.VendorRejected, EventID: "new-0", Origin: 9}); err != nil {
		t.Fatal(err)
	}
	st := dlq.NewStore(e.JS, e.Topo)
	ids := func(f dlq.Filter) []string {
		recs, err := st.List(ctx, f, 0)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range recs {
			out = append(out, r.EventID)
		}
		return out
	}
	if got := ids(dlq.Filter{Sink: "chabok"}); len(got) != 4 {
		t.Fatalf("sink chabok lists %v, want the 3 old records and the new one", got)
	}
	if res, err := st.Replay(ctx, dlq.Filter{EventID: "old-1"}, dlq.ReplayOptions{}); err != nil || res.Replayed != 1 {
		t.Fatalf("replay of an old record: %+v %v", res, err)
	}
	if n, err := st.Purge(ctx, dlq.Filter{EventID: "new-0"}); err != nil || n != 1 {
		t.Fatalf("purge of a new record: %d %v", n, err)
	}
	if got := ids(dlq.Filter{}); len(got) != 2 || got[0] != "old-0" || got[1] != "old-2" {
		t.Errorf("left %v, want [old-0 old-2]: one replay removes one old record, not its sink's", got)
	}
}
