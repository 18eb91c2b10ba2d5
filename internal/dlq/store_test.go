package dlq_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// A page of dead letters is read from its cursor on, and stops reading
// once it has its rows.
func TestEachFromCursor(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := dlq.NewWriter(e.JS, e.Topo)
	for i := range 10 {
		typ := "chapar.track"
		if i%2 == 1 {
			typ = "chapar.purchase"
		}
		if _, err := w.Write(ctx, &dlq.Record{Sink: "chabok", Reason: outcome.VendorRejected, Status: 400,
			EventID: fmt.Sprintf("e-%d", i), EventType: typ, Origin: uint64(i + 1), LastAttempt: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	st := dlq.NewStore(e.JS, e.Topo)
	page := func(f dlq.Filter, n int) []uint64 {
		var seqs []uint64
		if err := st.Each(ctx, f, func(r *dlq.Record) bool {
			seqs = append(seqs, r.Seq)
			return len(seqs) < n
		}); err != nil {
			t.Fatal(err)
		}
		return seqs
	}
	for _, c := range []struct {
		name string
		f    dlq.Filter
		n    int
		want []uint64
	}{
		{"first page", dlq.Filter{}, 3, []uint64{1, 2, 3}},
		{"next page from the cursor", dlq.Filter{After: 3}, 3, []uint64{4, 5, 6}},
		{"last page is short", dlq.Filter{After: 8}, 3, []uint64{9, 10}},
		{"cursor at the end", dlq.Filter{After: 10}, 3, nil},
		{"cursor past the end", dlq.Filter{After: 99}, 3, nil},
		{"cursor with a filter", dlq.Filter{After: 4, EventType: "chapar.purchase"}, 10, []uint64{6, 8, 10}},
		{"event type alone", dlq.Filter{EventType: "chapar.track"}, 2, []uint64{1, 3}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := page(c.f, c.n); fmt.Sprint(got) != fmt.Sprint(c.want) {
				t.Errorf("got %v, want %v", got, c.want)
			}
		})
	}
}

// A scan stops at its caller's deadline, between two dead letters, and
// says why.
func TestEachStopsWhenTheContextEnds(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := dlq.NewWriter(e.JS, e.Topo)
	for i := range 10 {
		if _, err := w.Write(ctx, &dlq.Record{Sink: "chabok", Reason: outcome.VendorRejected, EventID: fmt.Sprintf("e-%d", i), Origin: uint64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	scan, stop := context.WithCancel(ctx)
	seen := 0
	err := dlq.NewStore(e.JS, e.Topo).Each(scan, dlq.Filter{}, func(*dlq.Record) bool {
		seen++
		if seen == 3 {
			stop()
		}
		return true
	})
	if !errors.Is(err, context.Canceled) || seen != 3 {
		t.Errorf("Each after its context ended: %d read, error %v", seen, err)
	}
}

// BenchmarkEachScan measures a full read of the dead-letter stream (what a
// dry run or a filter matching little does): go test -run XXX -bench
// EachScan ./internal/dlq. It reports dead letters read a second.
func BenchmarkEachScan(b *testing.B) {
	const n = 20000
	e := testenv.New(b)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	body := []byte(`{"specversion":"1.0","id":"x","type":"chapar.track","source":"bench","data":{"name":"order_paid","user":{"id":"u"}}}`)
	for i := range n {
		r := &dlq.Record{Sink: "chabok", Reason: outcome.VendorRejected, Status: 400, Code: "INVALID_PARAMETERS",
			EventID: fmt.Sprintf("e-%d", i), EventType: "chapar.track", Origin: uint64(i + 1), LastAttempt: time.Now(), Data: body}
		if _, err := dlq.NewWriter(e.JS, e.Topo).Write(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
	st := dlq.NewStore(e.JS, e.Topo)
	b.ResetTimer()
	for b.Loop() {
		if err := st.Each(ctx, dlq.Filter{Code: "NO_SUCH_CODE"}, func(*dlq.Record) bool { return true }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "dead_letters/s")
}

// A replay carries the event's first receipt time, which stands for an
// envelope's missing time; a record from before it was kept gives its
// first attempt instead, the nearest time it knows.
func TestRequeueCarriesTheFirstReceiptTime(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	received := time.Date(2026, 3, 1, 10, 0, 0, 123_000_000, time.UTC)
	first := received.Add(40 * time.Millisecond)
	cases := []struct {
		name     string
		received time.Time
		want     time.Time
	}{
		{"kept", received, received},
		{"older record", time.Time{}, first},
	}
	w, st := dlq.NewWriter(e.JS, e.Topo), dlq.NewStore(e.JS, e.Topo)
	retries, err := e.JS.Stream(ctx, e.Topo.RetriesStream())
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			sink := fmt.Sprintf("s%d", i)
			if _, err := w.Write(ctx, &dlq.Record{Sink: sink, Reason: outcome.VendorRejected, EventID: "e-" + sink,
				EventType: "chapar.track", Origin: uint64(i + 1), FirstAttempt: first, LastAttempt: first,
				Received: c.received, Data: []byte(`{}`)}); err != nil {
				t.Fatal(err)
			}
			recs, err := st.List(ctx, dlq.Filter{Sink: sink}, 0)
			if err != nil || len(recs) != 1 {
				t.Fatalf("%d records: %v", len(recs), err)
			}
			if !recs[0].Received.Equal(c.received) {
				t.Errorf("stored received %v, want %v", recs[0].Received, c.received)
			}
			if err := st.Requeue(ctx, recs[0]); err != nil {
				t.Fatal(err)
			}
			m, err := retries.GetLastMsgForSubject(ctx, e.Topo.RetryDueSubject(sink))
			if err != nil {
				t.Fatal(err)
			}
			got, err := time.Parse(time.RFC3339Nano, m.Header.Get(topology.HeaderReceived))
			if err != nil || !got.Equal(c.want) {
				t.Errorf("replay's %s is %q, want %v", topology.HeaderReceived, m.Header.Get(topology.HeaderReceived), c.want)
			}
		})
	}
}
