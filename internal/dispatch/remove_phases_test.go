package dispatch_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// A removal is two-phase (topology.Retire): mark the consumers, wait,
// delete. Between the phases: an interrupted removal leaves the mark and
// the sink, and run again completes; a dispatcher that starts with the
// sink keeps it, clears the mark, and the removal gives up; a second
// removal at the same time also completes. The mark keeps the consumer's
// other metadata (its fence and recorded start).
func TestRemovalBetweenItsPhases(t *testing.T) {
	t.Parallel() // its cases already run side by side: each mostly waits out RemovalSettle
	for _, tc := range []struct {
		name string
		// between runs while the consumers are marked; it returns the
		// error the first removal is to end with (a substring; "": none).
		between func(t *testing.T, e *testenv.Env, interrupt func()) string
		kept    bool // the sink is kept, its consumers unmarked
	}{
		{name: "interrupted, then run again", between: func(_ *testing.T, _ *testenv.Env, interrupt func()) string {
			interrupt()
			return "run it again to complete it"
		}},
		{name: "a dispatcher starts with the sink", kept: true, between: func(_ *testing.T, e *testenv.Env, _ func()) string {
			e.Start([]config.Sink{e.Sink("crm", emulator.MetrixGateway, slugs, nil)}, []config.Route{{Sinks: []string{"crm"}}})
			return "still consuming sink crm"
		}},
		{name: "a second removal at the same time", between: func(t *testing.T, e *testenv.Env, _ func()) string {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := e.Topo.Retire(ctx, e.JS, "crm", topology.RemovalSettle); err != nil {
				t.Errorf("the second removal: %v", err)
			}
			return ""
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // each mostly waits out RemovalSettle
			e := testenv.New(t)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			// crm was run, with its fence and start recorded, and is run
			// no more.
			crm := e.Start([]config.Sink{e.Sink("crm", emulator.MetrixGateway, slugs, nil)}, []config.Route{{Sinks: []string{"crm"}}})
			if err := crm.Stop(); err != nil {
				t.Fatal(err)
			}
			meta := func() map[string]string {
				c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("crm"))
				if err != nil {
					t.Fatal(err)
				}
				return c.CachedInfo().Config.Metadata
			}
			before := meta()
			if before[topology.FenceMetadata] == "" || before[topology.StartMetadata] == "" {
				t.Fatalf("crm's consumer lacks its fence or start: %v", before)
			}
			rctx, interrupt := context.WithCancel(ctx)
			defer interrupt()
			removed := make(chan error, 1)
			go func() {
				_, err := e.Topo.Retire(rctx, e.JS, "crm", topology.RemovalSettle)
				removed <- err
			}()
			testenv.Eventually(t, 5*time.Second, "crm's consumer marked", func() bool { return meta()[topology.RemovingMetadata] != "" })
			marked := meta()
			for _, k := range []string{topology.FenceMetadata, topology.StartMetadata} {
				if marked[k] != before[k] {
					t.Errorf("the mark changed %s: %q, was %q", k, marked[k], before[k])
				}
			}
			want := tc.between(t, e, interrupt)
			var err error
			select {
			case err = <-removed:
			case <-time.After(20 * time.Second):
				t.Fatal("the removal did not end")
			}
			if want == "" {
				if err != nil {
					t.Fatalf("first removal: %v", err)
				}
				if f, err := e.Topo.Footprint(ctx, e.JS, "crm"); err != nil || f.Exists() {
					t.Errorf("crm left behind: %+v %v", f, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("first removal: %v, want an error saying %q", err, want)
			}
			f, ferr := e.Topo.Footprint(ctx, e.JS, "crm")
			if ferr != nil || len(f.Consumers) != 2 {
				t.Fatalf("crm after the first removal: %+v %v, want both consumers kept", f, ferr)
			}
			if tc.kept {
				if m := meta(); m[topology.RemovingMetadata] != "" || m[topology.StartMetadata] != before[topology.StartMetadata] {
					t.Errorf("crm's consumer, bound by a dispatcher running it: %v, want unmarked, its start kept", m)
				}
				ids := publishTracks(t, e, 2, "order_paid")
				testenv.Eventually(t, 10*time.Second, "crm delivering", allDelivered(t, e, ids))
				return
			}
			if _, err := e.Topo.Retire(ctx, e.JS, "crm", topology.RemovalSettle); err != nil {
				t.Fatalf("the removal run again: %v", err)
			}
			if f, err := e.Topo.Footprint(ctx, e.JS, "crm"); err != nil || f.Exists() {
				t.Errorf("crm left behind: %+v %v", f, err)
			}
		})
	}
}
