package dispatch_test

import (
	"fmt"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// A route with a filter delivers exactly the events it is true for, and
// skips the rest (acked: the consumer drains); an event the filter fails
// on (a field absent, a string where it compares a number) is not
// delivered by that route, is counted and logged at a bounded rate, and
// stops nothing: the other sinks get their events.
func TestRouteFilterDeliversOnlyMatchingEvents(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	logs := observeLogs(e)
	d := e.Start([]config.Sink{e.Sink("chabok", emulator.Chabok, nil, nil), e.Sink("hook", emulator.Webhook, nil, nil)},
		[]config.Route{
			{Types: []string{envelope.TypeTrack}, Sinks: []string{"chabok"}},
			{Types: []string{"com.shop.order.placed"}, Filter: `data.amount >= 1000000 && source startsWith "shop/"`, Sinks: []string{"hook"}},
		})
	publish := func(source string, data any) string {
		env, err := envelope.New("com.shop.order.placed", source, data)
		if err != nil {
			t.Fatal(err)
		}
		e.Publish(env)
		return env.ID
	}
	var want []string
	failing := 0
	for i := range 3 {
		want = append(want, publish("shop/web", map[string]any{"amount": 2000000 + i}))
		publish("shop/web", map[string]any{"amount": 10 + i})      // below
		publish("blog/web", map[string]any{"amount": 2000000 + i}) // another source
		publish("shop/web", map[string]any{"total": 2000000 + i})  // no amount: the filter fails
		publish("shop/web", map[string]any{"amount": "lots"})      // not a number: fails
		failing += 2
		e.Publish(testenv.Track(t, "order_paid", fmt.Sprintf("u%d", i)))
	}
	testenv.Eventually(t, 10*time.Second, "the matching events delivered, the others skipped", func() bool {
		return d.Tally.DeliveredTo("hook") == len(want) && d.Tally.DeliveredTo("chabok") == 3 && e.Idle("hook", "chabok")
	})
	got := webhookRequestsPerID(t, e)
	if ids := slices.Sorted(maps.Keys(got)); !slices.Equal(ids, slices.Sorted(slices.Values(want))) {
		t.Errorf("the webhook got %v, want exactly %v", ids, want)
	}
	for id, n := range got {
		if n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
	testenv.Eventually(t, 5*time.Second, "the failed filters counted", func() bool { return d.Tally.FilterFailures("routes[1]") == failing })
	lines := 0
	for _, l := range logs.All() {
		if l.Message == "a route's filter failed on an event; the route does not match it" {
			lines++
			if l.ContextMap()["route"] != "routes[1]" || l.ContextMap()["error"] == nil {
				t.Errorf("log line %v does not name the route and the error", l.ContextMap())
			}
		}
	}
	if lines == 0 || lines >= failing {
		t.Errorf("%d log lines for %d failures: want at least one, and fewer than the failures (a bounded rate)", lines, failing)
	}
	_, _, sinks := d.Tally.Snapshot()
	for _, s := range sinks {
		if len(s.DeadLettered) != 0 {
			t.Errorf("sink %s dead-lettered %v; a filter that fails dead-letters nothing", s.Sink, s.DeadLettered)
		}
	}
}
