package lookup_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/deliveries"
	"github.com/chapar-dev/chapar/internal/lookup"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

var lookupEvents = flag.Int("lookup.events", 0, "measure events show with this many events stored, each delivered to two sinks (a long run: docs/benchmarks.md)")

// The lookup's figures (issue 21: under a second for any event inside
// retention with a million events stored): N events in the events stream,
// two sinks' delivery records of each, then events show of 1,000 random
// ones. A measurement, run by hand:
//
//	go test ./internal/lookup -run TestLookupAmongManyEvents -lookup.events 1000000 -v
func TestLookupAmongManyEvents(t *testing.T) {
	n := *lookupEvents
	if n == 0 {
		t.Skip("a long measurement: go test ./internal/lookup -run TestLookupAmongManyEvents -lookup.events 1000000 -v")
	}
	e := testenv.New(t)
	cfg := config.Default()
	cfg.Streams = e.Streams
	cfg.Sinks = []config.Sink{{Name: "chabok"}, {Name: "metrix"}}
	cfg.Routes = []config.Route{{Sinks: []string{"chabok", "metrix"}}}
	env := testenv.Track(t, "order_paid", "u1")
	raw, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	ids := make([]string, n)
	start := time.Now()
	subj := e.Topo.EventSubject(envelope.TypeTrack)
	for i := range n {
		ids[i] = fmt.Sprintf("evt-%08d-%s", i, env.ID)
		// The same envelope under another id: what a lookup reads is
		// the id's records and the event at their sequence.
		m := nats.NewMsg(subj)
		m.Header.Set(jetstream.MsgIDHeader, ids[i])
		m.Data = raw
		// Acknowledged publishes, a window at a time: plain ones this
		// fast overrun the stream's ingest queue and some are dropped.
		if _, err := e.JS.PublishMsgAsync(m); err != nil {
			t.Fatal(err)
		}
		for _, sink := range []string{"chabok", "metrix"} {
			r := deliveries.Record{EventID: ids[i], Type: env.Type, Name: "order_paid", Sink: sink, State: deliveries.Delivered,
				At: time.Now().UTC(), Attempts: 1, Latency: time.Millisecond, Stream: e.Topo.EventsStream(), Seq: uint64(i + 1), Origin: uint64(i + 1)}
			b, _ := json.Marshal(r)
			if _, err := e.JS.PublishAsync(deliveries.Subject(e.Topo.Prefix(), ids[i]), b); err != nil {
				t.Fatal(err)
			}
		}
		if i%1000 == 999 {
			select {
			case <-e.JS.PublishAsyncComplete():
			case <-time.After(time.Minute):
				t.Fatal("publishes not acknowledged within a minute")
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	testenv.Eventually(t, 5*time.Minute, "every event and record stored", func() bool {
		ev, err1 := e.JS.Stream(ctx, e.Topo.EventsStream())
		rec, err2 := e.JS.Stream(ctx, e.Topo.DeliveriesStream())
		return err1 == nil && err2 == nil && ev.CachedInfo().State.Msgs == uint64(n) && rec.CachedInfo().State.Msgs == uint64(2*n)
	})
	t.Logf("stored %d events and %d records in %s", n, 2*n, time.Since(start).Round(time.Second))
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("process heap (the embedded server and this test) after storing: %d MiB", ms.HeapAlloc>>20)

	var took []time.Duration
	for range 1000 {
		i := rand.IntN(n)
		t0 := time.Now()
		rep, err := lookup.Show(ctx, e.JS, cfg, ids[i])
		took = append(took, time.Since(t0))
		if err != nil {
			t.Fatal(err)
		}
		if rep.Seq != uint64(i+1) || len(rep.Sinks) != 2 || rep.Sinks[0].State != lookup.Delivered || rep.Sinks[1].State != lookup.Delivered {
			t.Fatalf("events show %s: %+v", ids[i], rep)
		}
	}
	slices.Sort(took)
	t.Logf("events show among %d events: p50 %s, p99 %s, max %s (1,000 random ids)", n,
		took[len(took)/2].Round(10*time.Microsecond), took[len(took)*99/100].Round(10*time.Microsecond), took[len(took)-1].Round(10*time.Microsecond))
}
