package lookup_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/lookup"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// consumers lists every consumer of the deployment's streams.
func consumers(t *testing.T, e *testenv.Env) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []string
	for name := range e.JS.StreamNames(ctx).Name() {
		st, err := e.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		for c := range st.ConsumerNames(ctx).Name() {
			out = append(out, name+"/"+c)
		}
	}
	slices.Sort(out)
	return out
}

// Review of events show with subject filters: a delivered event, one on a
// subject its sink does not read (dead-lettered for it by the first
// sink), and one waiting for a paused sink, each shown as what became of
// it for the sink it is routed to, and not routed for the other; the
// lookups leave no consumer behind.
func TestReviewShowWithFiltersLeavesNoConsumer(t *testing.T) {
	e := testenv.New(t)
	sinks := []config.Sink{e.Sink("first", emulator.Chabok, nil, nil), e.Sink("gateway", emulator.MetrixGateway,
		map[string]string{"order_paid": "aewqd"}, nil)}
	routes := []config.Route{
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}},
		{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}},
	}
	d := e.Start(sinks, routes)
	cfg := e.Config(sinks, routes)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	state := func(id, sink string) lookup.State {
		rep, err := lookup.Show(ctx, e.JS, cfg, id)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range rep.Sinks {
			if s.Sink == sink {
				return s.State
			}
		}
		return ""
	}
	delivered := testenv.Track(t, "order_paid", "u1")
	e.Publish(delivered)
	stray := testenv.Track(t, "order_paid", "u2")
	raw, err := stray.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	e.PublishRaw(e.Streams.SubjectPrefix+".events.chapar.track", stray.ID, raw)
	testenv.Eventually(t, 20*time.Second, "delivered and dead-lettered", func() bool {
		return d.Tally.DeliveredTo("gateway") == 1 && e.Idle("first", "gateway")
	})
	before := consumers(t, e)
	if len(before) == 0 {
		t.Fatal("no consumers listed")
	}
	testenv.Eventually(t, 5*time.Second, "the delivered event shown delivered", func() bool { return state(delivered.ID, "gateway") == lookup.Delivered })
	if s := state(delivered.ID, "first"); s != lookup.NotRouted {
		t.Errorf("delivered event, first: %s, want not_routed", s)
	}
	testenv.Eventually(t, 5*time.Second, "the stray shown dead-lettered", func() bool { return state(stray.ID, "gateway") == lookup.DeadLettered })
	if err := e.Topo.SetOperatorPause(ctx, e.JS, "gateway", topology.OperatorPause{Paused: true, At: time.Now(), By: "test"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "paused", func() bool { return d.Tally.Paused("gateway") })
	waiting := testenv.Track(t, "order_paid", "u3")
	e.Publish(waiting)
	if s := state(waiting.ID, "gateway"); s != lookup.Paused {
		t.Errorf("event for the paused sink: %s, want paused", s)
	}
	if after := consumers(t, e); !slices.Equal(before, after) {
		t.Errorf("consumers before the lookups %v, after %v", before, after)
	}
}
