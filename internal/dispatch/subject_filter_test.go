package dispatch_test

import (
	"context"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

func TestSinkFilter(t *testing.T) {
	track, identify, custom := envelope.TypeTrack, envelope.TypeIdentify, "com.shop.order.shipped"
	byType := func(types ...string) topology.EventFilter { return topology.EventFilter{ByType: true, Types: types} }
	tests := []struct {
		name    string
		routes  []config.Route
		byRoute bool
		lead    bool
		want    topology.EventFilter
	}{
		{"one route's types", []config.Route{{Types: []string{track}, Sinks: []string{"a"}}}, true, false, byType(track)},
		{"every route naming it, sorted, each once", []config.Route{
			{Types: []string{track, custom}, Sinks: []string{"a", "b"}},
			{Types: []string{identify}, Sinks: []string{"b"}},
			{Types: []string{track}, Names: []string{"order_*"}, Sinks: []string{"a"}},
		}, true, false, byType(track, custom)},
		{"names are not a filter: the types' subjects are a superset", []config.Route{{Types: []string{track}, Names: []string{"x"}, Sinks: []string{"a"}}}, true, false, byType(track)},
		{"a route with no types reads everything", []config.Route{
			{Types: []string{track}, Sinks: []string{"a"}},
			{Names: []string{"order_*"}, Sinks: []string{"a"}},
		}, true, false, topology.EventFilter{}},
		{"no route names it: destinations only", []config.Route{{Types: []string{track}, Sinks: []string{"b"}}}, true, false, byType()},
		{"a lead reads everything (it counts received and unrouted)", []config.Route{{Types: []string{track}, Sinks: []string{"a"}}}, true, true, topology.EventFilter{}},
		{"streams.filter_by_route off", []config.Route{{Types: []string{track}, Sinks: []string{"a"}}}, false, false, topology.EventFilter{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := dispatch.SinkFilter("a", tt.routes, tt.byRoute, tt.lead)
			if got.ByType != tt.want.ByType || (got.ByType && !reflect.DeepEqual(got.Types, append([]string{}, tt.want.Types...))) {
				t.Errorf("SinkFilter = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// delivered is how many messages the server delivered a sink's events
// consumer (partition 0).
func delivered(t *testing.T, e *testenv.Env, sink string) uint64 {
	t.Helper()
	c, err := e.JS.Consumer(context.Background(), e.Topo.EventsStream(), topology.SinkConsumer(sink))
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.Delivered.Consumer
}

// Issue 20: a sink is delivered only the events of the types its routes
// name; before, every sink's consumer read the whole stream and skipped
// the rest. The first sink still reads everything (it counts what is
// received and unrouted).
func TestSinkReadsOnlyTheTypesItsRoutesName(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	e.Start([]config.Sink{first, gateway}, []config.Route{
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}},
		{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}},
	})
	for i := range 30 { // routed nowhere: only the first sink reads them
		env, err := envelope.New("com.shop.order.shipped", "test", map[string]any{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		e.Publish(env)
	}
	ids := publishTracks(t, e, 20, "order_paid")
	testenv.Eventually(t, 20*time.Second, "the track events delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 10*time.Second, "idle", func() bool { return e.Idle("first", "gateway") })
	if n := delivered(t, e, "gateway"); n != 20 {
		t.Errorf("the gateway's consumer was delivered %d messages, want its 20 track events", n)
	}
	if n := delivered(t, e, "first"); n != 50 {
		t.Errorf("the first sink's consumer was delivered %d messages, want all 50", n)
	}
}

// A rolling route widening (identify only → identify and track) with the
// consumer's filter: the new replica writes its wider filter with its
// fence, so every track event published from its bind on is delivered,
// by it, and none by the old replica (TestRollingRouteChangeLosesNothing
// with filters).
func TestRollingRouteWideningWithFiltersLosesNothing(t *testing.T) {
	t.Parallel() // waits on replicas and the vendor, not on the CPU
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := func(types ...string) []config.Route {
		return []config.Route{{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}, {Types: types, Sinks: []string{"gateway"}}}
	}
	old := e.Start([]config.Sink{first, sink}, routes(envelope.TypeIdentify))
	e.Start([]config.Sink{first, sink}, routes(envelope.TypeIdentify, envelope.TypeTrack))
	ids := publishTracks(t, e, 100, "order_paid") // the old replica may not know yet
	testenv.Eventually(t, 10*time.Second, "the old replica fenced off", func() bool { return old.Tally.Fenced("gateway") })
	ids = append(ids, publishTracks(t, e, 100, "order_paid")...)
	testenv.Eventually(t, 30*time.Second, "all 200 track events delivered", allDelivered(t, e, ids))
	if n := old.Tally.DeliveredTo("gateway"); n != 0 {
		t.Errorf("the old replica delivered %d track events its routes do not send", n)
	}
	for id, n := range gatewayIDs(t, e) {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
	if recs := deadLetters(t, e, dlq.Filter{}); len(recs) != 0 {
		t.Errorf("%d dead letters", len(recs))
	}
}

// Narrowing (identify and track → identify only) with filters: the new
// replica's filter drops track, so no track event is delivered to the
// sink at all, by either replica.
func TestRollingRouteNarrowingWithFiltersDeliversOnlyUnderTheNewRoutes(t *testing.T) {
	t.Parallel() // waits on replicas and the vendor, not on the CPU
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := func(types ...string) []config.Route {
		return []config.Route{{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}, {Types: types, Sinks: []string{"gateway"}}}
	}
	old := e.Start([]config.Sink{first, sink}, routes(envelope.TypeIdentify, envelope.TypeTrack))
	nu := e.Start([]config.Sink{first, sink}, routes(envelope.TypeIdentify))
	testenv.Eventually(t, 10*time.Second, "the old replica fenced off", func() bool { return old.Tally.Fenced("gateway") })
	before := delivered(t, e, "gateway")
	publishTracks(t, e, 50, "order_paid")
	testenv.Eventually(t, 10*time.Second, "settled", func() bool { return e.Idle("first", "gateway") })
	if n := old.Tally.DeliveredTo("gateway") + nu.Tally.DeliveredTo("gateway"); n != 0 {
		t.Errorf("%d track events delivered under routes that no longer send them", n)
	}
	if n := delivered(t, e, "gateway") - before; n != 0 {
		t.Errorf("the server delivered the narrowed consumer %d track events", n)
	}
}

// A producer that puts an event with destinations on its type's subject,
// not the direct one: the named sink's consumer reads only its routes'
// types and never sees it. The sinks that do see it dead-letter it for
// the named sink, once, and a replay (through the retries stream, which
// is not filtered) delivers it. Published as the Go publisher does (the
// direct subject), it is delivered and nothing is dead-lettered.
// With partitions, each partition's consumers filter on that partition's
// subjects.
func TestDestinationsOnATypeSubjectTheSinkDoesNotReadAreDeadLettered(t *testing.T) {
	t.Parallel() // waits on replicas and the vendor, not on the CPU
	for _, partitions := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d partitions", partitions), func(t *testing.T) {
			t.Parallel() // independent cases, each its own server
			e := testenv.New(t)
			if partitions > 1 {
				e = testenv.NewPartitioned(t, partitions)
			}
			destinationsOnATypeSubject(t, e)
		})
	}
}

func destinationsOnATypeSubject(t *testing.T, e *testenv.Env) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	first := e.Sink("first", emulator.Chabok, nil, nil)
	second := e.Sink("second", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	e.Start([]config.Sink{first, second, gateway}, []config.Route{
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}},
		{Types: []string{envelope.TypeTrack}, Sinks: []string{"second"}}, // reads track: sees it too
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"gateway"}},
	})
	var stray, direct []string
	for i := range 5 {
		env := testenv.Track(t, "order_paid", fmt.Sprintf("u%d", i), envelope.WithDestinations("gateway"))
		raw, err := env.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		e.PublishRaw(e.Topo.EventSubjectFor(env.Type, env.PartitionKey()), env.ID, raw) // not the direct subject
		stray = append(stray, env.ID)
		ok := testenv.Track(t, "order_paid", fmt.Sprintf("v%d", i), envelope.WithDestinations("gateway"))
		e.Publish(ok)
		direct = append(direct, ok.ID)
	}
	testenv.Eventually(t, 20*time.Second, "the direct ones delivered", allDelivered(t, e, direct))
	testenv.Eventually(t, 20*time.Second, "settled", func() bool { return e.Idle("first", "second", "gateway") })
	got := unknownFor(t, e, "gateway")
	for _, id := range stray {
		if got[id] != 1 {
			t.Errorf("event %s: %d dead letters for gateway, want 1", id, got[id])
		}
	}
	for _, id := range direct {
		if got[id] != 0 {
			t.Errorf("event %s, on the direct subject: %d dead letters", id, got[id])
		}
	}
	for _, r := range deadLetters(t, e, dlq.Filter{Reason: outcome.UnknownDestination, Sink: "gateway"}) {
		if !strings.Contains(r.Error, "direct") {
			t.Errorf("dead letter's reason does not say what to do: %q", r.Error)
			break
		}
	}
	if t.Failed() {
		return
	}
	res, err := dlq.NewStore(e.JS, e.Topo).Replay(ctx, dlq.Filter{Sink: "gateway"}, dlq.ReplayOptions{})
	if err != nil || res.Replayed != len(stray) {
		t.Fatalf("replay: %+v %v", res, err)
	}
	testenv.Eventually(t, 20*time.Second, "the replays delivered", allDelivered(t, e, stray))
	testenv.Eventually(t, 10*time.Second, "idle", func() bool { return e.Idle("gateway") })
	for id, n := range gatewayIDs(t, e) {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
}
