package dispatch_test

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

func TestChooseLeads(t *testing.T) {
	tests := []struct {
		name   string
		sinks  []string
		marked []string
		want   []string
	}{
		{"a fresh deployment: the first sink", []string{"a", "b"}, nil, []string{"a"}},
		{"the marked sink, wherever it is in the config", []string{"zero", "a", "b"}, []string{"a"}, []string{"a"}},
		{"every marked sink (two configs bound a fresh deployment at once)", []string{"a", "b"}, []string{"b", "a"}, []string{"a", "b"}},
		{"a mark on a sink this config does not run does not count", []string{"b", "c"}, []string{"a"}, []string{"b"}},
		{"no sinks, no lead", nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			marked := map[string]bool{}
			for _, s := range tt.marked {
				marked[s] = true
			}
			// topology.Leads reads only the config's sinks: marks of others
			// are not in what it returns.
			maps.DeleteFunc(marked, func(s string, _ bool) bool { return !slices.Contains(tt.sinks, s) })
			if got := slices.Sorted(maps.Keys(dispatch.ChooseLeads(tt.sinks, marked))); !slices.Equal(got, tt.want) {
				t.Errorf("ChooseLeads = %v, want %v", got, tt.want)
			}
		})
	}
}

// consumerState is what decides how a sink's events consumer reads:
// its fence, its filter and the lead mark.
type consumerState struct {
	fence   string
	filters string
	lead    bool
}

func stateOf(t *testing.T, e *testenv.Env, sink string) consumerState {
	t.Helper()
	c, err := e.JS.Consumer(context.Background(), e.Topo.EventsStream(), topology.SinkConsumer(sink))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return consumerState{fence: info.Config.Metadata[topology.FenceMetadata],
		filters: fmt.Sprint(topology.FiltersOf(info.Config)), lead: topology.IsLead(info)}
}

// readsEverything says whether a consumer in state s reads the whole
// events stream.
func (s consumerState) readsEverything(e *testenv.Env) bool {
	return s.filters == fmt.Sprint([]string{e.Topo.PartitionSubjects(0)})
}

// envWith is a test environment with the given number of partitions.
func envWith(t *testing.T, partitions int) *testenv.Env {
	if partitions > 1 {
		return testenv.NewPartitioned(t, partitions)
	}
	return testenv.New(t)
}

// publishStray publishes a track event on another type's subject (of its
// partition), which a sink routed track by type does not read: only a
// lead checks it, and dead-letters it for that sink.
func publishStray(t *testing.T, e *testenv.Env) *envelope.Envelope {
	t.Helper()
	stray := testenv.Track(t, "order_paid", "u1")
	raw, err := stray.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	e.PublishRaw(e.Topo.EventSubjectFor("com.shop.order.shipped", stray.PartitionKey()), stray.ID, raw)
	return stray
}

// A fresh deployment keeps what it did before the lead was recorded: its
// first sink is the lead, marked on the server, reads every subject and
// counts what is received; the others read their routes' types.
func TestAFreshDeploymentMarksItsFirstSinkTheLead(t *testing.T) {
	t.Parallel() // waits on binds and the vendor, not on the CPU
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	d := e.Start([]config.Sink{first, gateway}, []config.Route{
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}},
		{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}},
	})
	if s := stateOf(t, e, "first"); !s.lead || !s.readsEverything(e) {
		t.Errorf("the first sink's consumer: %+v, want marked the lead and reading every subject", s)
	}
	if s := stateOf(t, e, "gateway"); s.lead || s.readsEverything(e) {
		t.Errorf("the second sink's consumer: %+v, want unmarked and reading its routes' types", s)
	}
	for range 5 { // routed nowhere: only the lead reads them
		env, err := envelope.New("com.shop.order.shipped", "test", map[string]any{})
		if err != nil {
			t.Fatal(err)
		}
		e.Publish(env)
	}
	ids := publishTracks(t, e, 5, "order_paid")
	testenv.Eventually(t, 20*time.Second, "the track events delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 20*time.Second, "settled", func() bool { return e.Idle("first", "gateway") })
	if received, unrouted, _ := d.Tally.Snapshot(); received != 10 || unrouted != 5 {
		t.Errorf("received %d, unrouted %d; want 10 and 5, counted once by the lead", received, unrouted)
	}
}

// A rolling deploy that puts a new sink first, with a backlog the first
// sink has not read: a replica of the old config and one of the new run
// at once. The lead stays the sink marked on the server, so no consumer
// is narrowed or widened: the old first sink's backlog off its types (an
// invalid envelope, an event on a subject its sink does not read) is
// checked, the two replicas agree on every fence and both deliver.
func TestRollingDeployOfANewFirstSinkWithABacklogLeavesNothingUnchecked(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	for _, partitions := range []int{1, 2} {
		t.Run(fmt.Sprintf("partitions=%d", partitions), func(t *testing.T) { rollingDeployOfANewFirstSink(t, partitions) })
	}
}

func rollingDeployOfANewFirstSink(t *testing.T, partitions int) {
	e := envWith(t, partitions)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	zero := e.Sink("zero", emulator.Chabok, nil, nil)
	routes := []config.Route{
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}},
		{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}},
	}
	oldSinks, oldRoutes := []config.Sink{first, gateway}, routes
	newSinks, newRoutes := []config.Sink{zero, first, gateway}, append([]config.Route{{Types: []string{envelope.TypeIdentify}, Sinks: []string{"zero"}}}, routes...)
	if err := e.Start(oldSinks, oldRoutes).Stop(); err != nil {
		t.Fatal(err)
	}
	// The backlog, read by no consumer but the lead's.
	e.PublishRaw(e.Topo.EventSubject("com.shop.order.shipped"), "bad-1", []byte(`{"not":"an envelope"}`))
	stray := publishStray(t, e)
	backlog := publishTracks(t, e, 20, "order_paid")

	// Both configs bind at once, as in a rolling deploy.
	var (
		wg         sync.WaitGroup
		old, nu    *testenv.Dispatcher
		oerr, nerr error
	)
	wg.Go(func() { old, oerr = e.TryStart(oldSinks, oldRoutes) })
	wg.Go(func() { nu, nerr = e.TryStart(newSinks, newRoutes) })
	wg.Wait()
	if oerr != nil || nerr != nil {
		t.Fatalf("start: old config %v, new config %v", oerr, nerr)
	}
	bound := map[string]consumerState{}
	for _, s := range []string{"zero", "first", "gateway"} {
		bound[s] = stateOf(t, e, s)
	}
	if s := bound["first"]; !s.lead || !s.readsEverything(e) {
		t.Errorf("the old first sink's consumer: %+v, want still the lead, reading every subject", s)
	}
	if s := bound["zero"]; s.lead || s.readsEverything(e) {
		t.Errorf("the new first sink's consumer: %+v, want no lead, reading its routes' types", s)
	}

	marker := testenv.Track(t, "order_paid", "marker")
	e.Publish(marker)
	testenv.Eventually(t, 20*time.Second, "the backlog and the marker delivered", allDelivered(t, e, append(backlog, marker.ID)))
	testenv.Eventually(t, 20*time.Second, "settled", func() bool { return e.Idle("zero", "first", "gateway") })
	if n := len(deadLetters(t, e, dlq.Filter{Reason: "invalid_envelope"})); n != 1 {
		t.Errorf("the invalid envelope in the old first sink's backlog: %d dead letters, want 1", n)
	}
	if gatewayIDs(t, e)[stray.ID]+unknownFor(t, e, "gateway")[stray.ID] == 0 {
		t.Error("the track event on another type's subject: neither delivered nor dead-lettered")
	}
	// Both keep delivering: neither fenced off a sink, and each delivers
	// its share of what comes next.
	testenv.Eventually(t, 30*time.Second, "both replicas delivering", func() bool {
		if old.Tally.DeliveredTo("gateway") > 0 && nu.Tally.DeliveredTo("gateway") > 0 {
			return true
		}
		publishTracks(t, e, 10, "order_paid")
		return false
	})
	for _, s := range []string{"first", "gateway"} {
		if old.Tally.Fenced(s) || nu.Tally.Fenced(s) {
			t.Errorf("sink %s: fenced off (old config %v, new config %v); both configs run it alike", s, old.Tally.Fenced(s), nu.Tally.Fenced(s))
		}
	}
	for s, was := range bound {
		if now := stateOf(t, e, s); now != was {
			t.Errorf("sink %s's consumer changed after both bound: %+v, then %+v", s, was, now)
		}
	}
}

// Two configs that put different sinks first bind a fresh deployment at
// the same moment: each marks its own first sink, and neither may leave
// a marked sink reading only its types (one bind narrowing the sink the
// other just marked). Whatever the interleaving, every marked consumer
// reads every subject, and an invalid envelope on a subject no route
// names is dead-lettered.
func TestTwoConfigsBindingAFreshDeploymentAtOnceKeepEveryLeadReadingEverything(t *testing.T) {
	t.Parallel() // waits on binds; any order of the racing binds must pass
	e := testenv.New(t)
	a := e.Sink("a", emulator.Chabok, nil, nil)
	b := e.Sink("b", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"a"}},
		{Types: []string{envelope.TypeTrack}, Sinks: []string{"b"}},
	}
	var wg sync.WaitGroup
	errs := make([]error, 2)
	wg.Go(func() { _, errs[0] = e.TryStart([]config.Sink{a, b}, routes) })
	wg.Go(func() { _, errs[1] = e.TryStart([]config.Sink{b, a}, routes) })
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	leads := 0
	for _, s := range []string{"a", "b"} {
		st := stateOf(t, e, s)
		if st.lead {
			leads++
			if !st.readsEverything(e) {
				t.Errorf("sink %s is marked the lead but its consumer reads %s", s, st.filters)
			}
		}
	}
	if leads == 0 {
		t.Fatal("no sink marked the lead")
	}
	e.PublishRaw(e.Topo.EventSubject("com.shop.order.shipped"), "bad-1", []byte(`{"not":"an envelope"}`))
	ids := publishTracks(t, e, 5, "order_paid")
	testenv.Eventually(t, 20*time.Second, "the track events delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 20*time.Second, "the invalid envelope dead-lettered", func() bool {
		return len(deadLetters(t, e, dlq.Filter{Reason: "invalid_envelope"})) == 1
	})
}

// A config that drops the lead, rolled out while a replica of the old
// config still runs it: the new lead's sweep overlaps the old lead's own
// checks. Every verdict is the same whoever reaches it, and a dead letter
// is stored once per (event, sink), so each event has one outcome: an
// invalid envelope one dead letter, a stray event for the new lead
// delivered or dead-lettered once, each track event delivered once.
func TestDroppingTheLeadWhileItRunsGivesEachEventOneOutcome(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
	old := e.Start([]config.Sink{first, gateway}, []config.Route{{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}, track})
	// The old lead behind (paused), so the sweep has its backlog to check,
	// and back at work (resumed) while the sweep runs.
	setPaused(t, e, "first", true)
	testenv.Eventually(t, 10*time.Second, "the lead paused", func() bool { return old.Tally.Paused("first") })
	var strays []string
	for i := range 3 {
		e.PublishRaw(e.Topo.EventSubject("com.shop.order.shipped"), fmt.Sprintf("bad-%d", i), []byte(`{"not":"an envelope"}`))
		strays = append(strays, publishStray(t, e).ID)
	}
	ids := publishTracks(t, e, 20, "order_paid")
	testenv.Eventually(t, 20*time.Second, "gateway past the strays", allDelivered(t, e, ids))
	nu := e.Start([]config.Sink{gateway}, []config.Route{track})
	setPaused(t, e, "first", false)
	for i := 3; i < 6; i++ {
		e.PublishRaw(e.Topo.EventSubject("com.shop.order.shipped"), fmt.Sprintf("bad-%d", i), []byte(`{"not":"an envelope"}`))
	}
	ids = append(ids, publishTracks(t, e, 20, "order_paid")...)
	testenv.Eventually(t, 20*time.Second, "the track events delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 20*time.Second, "six invalid envelopes dead-lettered", func() bool {
		return len(deadLetters(t, e, dlq.Filter{Reason: "invalid_envelope"})) == 6
	})
	testenv.Eventually(t, 20*time.Second, "the strays judged", func() bool {
		got, dead := gatewayIDs(t, e), unknownFor(t, e, "gateway")
		for _, id := range strays {
			if got[id]+dead[id] == 0 {
				return false
			}
		}
		return true
	})
	testenv.Eventually(t, 20*time.Second, "settled", func() bool { return e.Idle("first", "gateway") })
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := nu.Stop(); err != nil {
		t.Fatal(err)
	}
	if n := len(deadLetters(t, e, dlq.Filter{Reason: "invalid_envelope"})); n != 6 {
		t.Errorf("%d invalid_envelope dead letters, want 6", n)
	}
	got, dead := gatewayIDs(t, e), unknownFor(t, e, "gateway")
	for _, id := range strays {
		if got[id]+dead[id] != 1 {
			t.Errorf("stray %s: delivered %d times, dead-lettered %d times; want one outcome", id, got[id], dead[id])
		}
	}
	for _, id := range ids {
		if got[id] != 1 || dead[id] != 0 {
			t.Errorf("track %s: delivered %d times, dead-lettered %d times; want delivered once", id, got[id], dead[id])
		}
	}
}
