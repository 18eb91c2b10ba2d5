package dlq_test

import (
	"context"
	"flag"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// fullScan runs the scan test at the size the issue measured (50,000 dead
// letters); the default is a smaller stream with a lower consumer cap,
// which fails the same way for the same reason, in a few seconds.
var fullScan = flag.Bool("dlq.full", false, "scan 50,000 dead letters ten times (about a minute without -race; run it without)")

// fill stores n dead letters of sinks a and b fast: async publishes, a
// window at a time, each confirmed before the test goes on.
func fill(ctx context.Context, t *testing.T, e *testenv.Env, n int) {
	t.Helper()
	w := dlq.NewWriter(e.JS, e.Topo)
	const window = 2000
	for start := 0; start < n; start += window {
		var acks []jetstream.PubAckFuture
		for i := start; i < min(start+window, n); i++ {
			sink := "a"
			if i%2 == 1 {
				sink = "b"
			}
			r := &dlq.Record{Sink: sink, Reason: outcome.VendorRejected, Status: 400, Attempts: 1,
				EventID: fmt.Sprintf("e-%d", i), EventType: "chapar.track", Origin: uint64(i + 1), LastAttempt: time.Now()}
			f, err := e.JS.PublishMsgAsync(w.MsgOf(r), jetstream.WithMsgID(r.MsgID()))
			if err != nil {
				t.Fatal(err)
			}
			acks = append(acks, f)
		}
		for _, f := range acks {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				t.Fatal(err)
			case <-ctx.Done():
				t.Fatal(ctx.Err())
			}
		}
	}
}

func dlqConsumers(ctx context.Context, t *testing.T, e *testenv.Env) int {
	t.Helper()
	s, err := e.JS.Stream(ctx, e.Topo.DeadLetterStream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Consumers
}

// Every dead-letter read leaves nothing behind on the server: ten full
// scans in a row, a console page (50 rows) at a time, with the lookups
// (show by sequence and by event id), stats and a dry run between them,
// all succeed, and the stream's consumer count is what it was. Reads used
// to create an ordered consumer each that lived 5 minutes, so one scan
// filled the server's cap (1,000 a stream) and every read after it failed.
func TestReadsLeaveNothingOnTheServer(t *testing.T) {
	n, maxConsumers := 1000, 10
	if *fullScan {
		n, maxConsumers = 50000, 0 // the server's own cap, 1,000
	}
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if maxConsumers > 0 {
		// The short form's cap: a scan of n/50 pages is over it.
		s, err := e.JS.Stream(ctx, e.Topo.DeadLetterStream())
		if err != nil {
			t.Fatal(err)
		}
		cfg := s.CachedInfo().Config
		cfg.MaxConsumers = maxConsumers
		if _, err := e.JS.UpdateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	began := time.Now()
	fill(ctx, t, e, n)
	t.Logf("stored %d dead letters in %v", n, time.Since(began))
	before := dlqConsumers(ctx, t, e)
	st := dlq.NewStore(e.JS, e.Topo)
	began = time.Now()
	for scan := range 10 {
		seen, pages := 0, 0
		var after uint64
		for {
			var page []*dlq.Record
			if err := st.Each(ctx, dlq.Filter{After: after}, func(r *dlq.Record) bool {
				page = append(page, r)
				return len(page) < 50
			}); err != nil {
				t.Fatalf("scan %d, page %d: %v", scan+1, pages+1, err)
			}
			if len(page) == 0 {
				break
			}
			seen += len(page)
			pages++
			after = page[len(page)-1].Seq
		}
		if seen != n {
			t.Fatalf("scan %d saw %d dead letters, want %d", scan+1, seen, n)
		}
		if _, err := st.Get(ctx, after); err != nil {
			t.Fatalf("scan %d: show by sequence: %v", scan+1, err)
		}
		if recs, err := st.List(ctx, dlq.Filter{EventID: fmt.Sprintf("e-%d", n/2)}, 0); err != nil || len(recs) != 1 {
			t.Fatalf("scan %d: show by event id: %d records, %v", scan+1, len(recs), err)
		}
		if _, total, err := st.Stats(ctx, dlq.Filter{Sink: "b"}, func(*dlq.Record) string { return "" }); err != nil || total != n/2 {
			t.Fatalf("scan %d: stats of sink b: %d, %v; want %d", scan+1, total, err, n/2)
		}
		if res, err := st.Replay(ctx, dlq.Filter{Sink: "a"}, dlq.ReplayOptions{DryRun: true}); err != nil || res.Matched != n/2 {
			t.Fatalf("scan %d: dry run of sink a: %d, %v; want %d", scan+1, res.Matched, err, n/2)
		}
	}
	t.Logf("10 scans of %d dead letters in %v", n, time.Since(began))
	if after := dlqConsumers(ctx, t, e); after != before {
		t.Fatalf("the dead-letter stream has %d consumers after the scans, %d before", after, before)
	}
}

// A dead-letter stream made before reads used direct gets (no
// allow_direct) is still read, one record per request and leaving nothing
// behind, until a dispatcher starts and Ensure turns direct gets on in
// place, records kept.
func TestReadsAStreamMadeBeforeDirectGets(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := e.JS.Stream(ctx, e.Topo.DeadLetterStream())
	if err != nil {
		t.Fatal(err)
	}
	old := s.CachedInfo().Config
	old.AllowDirect = false
	if _, err := e.JS.UpdateStream(ctx, old); err != nil {
		t.Fatal(err)
	}
	const n = 300
	fill(ctx, t, e, n)
	// A gap in the sequence (a record deleted) is stepped over.
	if err := s.DeleteMsg(ctx, 5); err != nil {
		t.Fatal(err)
	}
	st := dlq.NewStore(e.JS, e.Topo)
	count := func() int {
		_, total, err := st.Stats(ctx, dlq.Filter{}, func(*dlq.Record) string { return "" })
		if err != nil {
			t.Fatal(err)
		}
		return total
	}
	if got := count(); got != n-1 {
		t.Fatalf("read %d dead letters of a stream without direct gets, want %d", got, n-1)
	}
	if c := dlqConsumers(ctx, t, e); c != 0 {
		t.Fatalf("%d consumers left on the dead-letter stream", c)
	}
	if err := e.Topo.Ensure(ctx, e.JS); err != nil {
		t.Fatal(err)
	}
	if s, err = e.JS.Stream(ctx, e.Topo.DeadLetterStream()); err != nil || !s.CachedInfo().Config.AllowDirect {
		t.Fatalf("Ensure left the dead-letter stream without direct gets (%v)", err)
	}
	if got := count(); got != n-1 {
		t.Fatalf("read %d dead letters after Ensure, want %d", got, n-1)
	}
}
