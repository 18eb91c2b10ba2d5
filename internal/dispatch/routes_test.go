package dispatch

import (
	"encoding/json"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

func newRoutes(t testing.TB, routes []config.Route) *Routes {
	t.Helper()
	r, err := NewRoutes(routes)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestRoutesMatch(t *testing.T) {
	routes := newRoutes(t, []config.Route{
		{Types: []string{envelope.TypeTrack}, Names: []string{"order_*", "signup"}, Sinks: []string{"chabok", "metrix"}},
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"metrix", "gateway"}},
		{Names: []string{"signup"}, Sinks: []string{"gateway", "chabok"}},
		{Types: []string{envelope.TypeIdentify}, Sinks: []string{"gateway"}},
	})
	user := envelope.User{ID: "u"}
	tests := []struct {
		name string
		typ  string
		data any
		opts []envelope.Option
		want []string
	}{
		{"pattern", envelope.TypeTrack, envelope.Track{Name: "order_paid", User: user}, nil, []string{"chabok", "metrix"}},
		{"two routes, each sink once", envelope.TypeTrack, envelope.Track{Name: "signup", User: user}, nil, []string{"chabok", "metrix", "gateway"}},
		{"type only", envelope.TypePurchase, envelope.Purchase{Track: envelope.Track{Name: "x", User: user}, Revenue: "1", Currency: "IRR"}, nil, []string{"metrix", "gateway"}},
		{"no match", envelope.TypeTrack, envelope.Track{Name: "page_view", User: user}, nil, nil},
		{"identify has no name", envelope.TypeIdentify, envelope.Identify{User: user}, nil, []string{"gateway"}},
		{"destinations override", envelope.TypeTrack, envelope.Track{Name: "order_paid", User: user},
			[]envelope.Option{envelope.WithDestinations("kenar", "kenar", "chabok")}, []string{"kenar", "chabok"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := routes.Match(decoded(t, tt.typ, "t", tt.data, tt.opts...)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Match = %v, want %v", got, tt.want)
			}
		})
	}
}

func decoded(t testing.TB, typ, source string, data any, opts ...envelope.Option) *envelope.Event {
	t.Helper()
	env, err := envelope.New(typ, source, data, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := env.Decode()
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// filtered is a table with content filters, for TestRoutesMatchFilters
// and TestRoutesWhy.
func filtered(t testing.TB) *Routes {
	return newRoutes(t, []config.Route{
		// 0: big orders to the sales hook
		{Types: []string{envelope.TypeTrack}, Names: []string{"order_*"}, Filter: `data.properties.amount >= 1000000`, Sinks: []string{"sales"}},
		// 1: events from Iran to chabok
		{Filter: `data.properties.country == "IR"`, Sinks: []string{"chabok"}},
		// 2: the shop's events to metrix, without reading data
		{Filter: `source startsWith "shop/"`, Sinks: []string{"metrix"}},
		// 3: every purchase to metrix too
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"metrix"}},
		// 4: custom events by their data
		{Types: []string{"com.shop.order.shipped"}, Filter: `data.carrier in ["post", "tipax"]`, Sinks: []string{"sales", "chabok"}},
	})
}

// track is a chapar.track event's data; its user is u.
func track(name string, props map[string]any) envelope.Track {
	return envelope.Track{Name: name, Properties: props, User: envelope.User{ID: "u"}}
}

func TestRoutesMatchFilters(t *testing.T) {
	routes := filtered(t)
	big := map[string]any{"amount": 2500000, "country": "IR"}
	tests := []struct {
		name   string
		typ    string
		source string
		data   any
		want   []string
		failed []int // routes whose filter failed on the event
	}{
		{"big order, Iranian user, shop", envelope.TypeTrack, "shop/web",
			track("order_paid", big), []string{"sales", "chabok", "metrix"}, nil},
		{"small order", envelope.TypeTrack, "shop/web",
			track("order_paid", map[string]any{"amount": 10, "country": "IR"}), []string{"chabok", "metrix"}, nil},
		{"not the shop, not Iran", envelope.TypeTrack, "blog/web",
			track("order_paid", map[string]any{"amount": 2500000, "country": "DE"}), []string{"sales"}, nil},
		{"amount absent: route 0 fails, does not match", envelope.TypeTrack, "blog/web",
			track("order_paid", map[string]any{"country": "IR"}), []string{"chabok"}, []int{0}},
		{"amount of another type: route 0 fails", envelope.TypeTrack, "blog/web",
			track("order_paid", map[string]any{"amount": "lots", "country": "DE"}), nil, []int{0}},
		{"name not routed: route 0's filter not evaluated", envelope.TypeTrack, "blog/web",
			track("page_view", map[string]any{"country": "DE"}), nil, nil},
		{"no properties: route 1 fails", "com.shop.order.shipped", "shop/web",
			map[string]any{"carrier": "post"}, []string{"metrix", "sales", "chabok"}, []int{1}},
		{"custom type, other carrier", "com.shop.order.shipped", "blog/web",
			map[string]any{"carrier": "dhl", "properties": map[string]any{"country": "IR"}}, []string{"chabok"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := raw(t, tt.typ, tt.source, tt.data)
			got, failed := routes.Eval(ev)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Eval = %v, want %v", got, tt.want)
			}
			var idx []int
			for _, f := range failed {
				idx = append(idx, f.Route)
				if f.Err == nil {
					t.Errorf("route %d failed without an error", f.Route)
				}
			}
			if !reflect.DeepEqual(idx, tt.failed) {
				t.Errorf("failed filters %v, want %v (%v)", idx, tt.failed, failed)
			}
			if m := routes.Match(ev); !reflect.DeepEqual(m, tt.want) {
				t.Errorf("Match = %v, Eval %v", m, tt.want)
			}
		})
	}
}

// raw is an event as the worker has it: the envelope parsed from its
// bytes, its data kept as sent (a Chapar type's extra fields included).
func raw(t testing.TB, typ, source string, data any) *envelope.Event {
	t.Helper()
	b, err := json.Marshal(map[string]any{"specversion": "1.0", "id": "e1", "source": source, "type": typ, "data": data})
	if err != nil {
		t.Fatal(err)
	}
	ev, err := envelope.ParseMessage(nil, b, envelope.DefaultMaxBytes)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// Why is Match told from one sink's side: the reason a lookup shows for
// a sink an event did not reach.
func TestRoutesWhy(t *testing.T) {
	routes := filtered(t)
	order := track("order_paid", map[string]any{"amount": 2500000, "country": "IR"})
	tests := []struct {
		name   string
		typ    string
		source string
		data   any
		dest   string // the destinations extension
		sink   string
		want   Why
		says   string
	}{
		{"routed", envelope.TypeTrack, "shop/web", order, "", "sales", Why{Reason: Routed, Route: 0}, "routes[0] sends it"},
		{"routed by the second route naming it", envelope.TypePurchase, "blog/web",
			map[string]any{"name": "x", "user": map[string]any{"id": "u"}, "revenue": 1, "currency": "IRR"}, "", "metrix",
			Why{Reason: Routed, Route: 3}, "routes[3] sends it"},
		{"no route for its type and name", envelope.TypeIdentify, "blog/web", map[string]any{"user": map[string]any{"id": "u"}}, "", "sales",
			Why{Reason: NoRoute, Route: -1}, "no route sends chapar.identify events to it"},
		{"no route for its name", envelope.TypeTrack, "shop/web", track("signup", nil), "", "sales",
			Why{Reason: NoRoute, Route: -1}, `no route sends chapar.track events named "signup" to it`},
		{"filtered out", envelope.TypeTrack, "shop/web", track("order_paid", map[string]any{"amount": 5}), "", "sales",
			Why{Reason: FilteredOut, Route: 0}, "filtered out by routes[0].filter"},
		{"filtered out by the first of two", "com.shop.order.shipped", "blog/web", map[string]any{"carrier": "dhl", "properties": map[string]any{"country": "DE"}}, "", "chabok",
			Why{Reason: FilteredOut, Route: 1}, "filtered out by routes[1].filter"},
		{"filter failed", envelope.TypeTrack, "shop/web", track("order_paid", nil), "", "sales",
			Why{Reason: FilteredOut, Route: 0}, "filtered out by routes[0].filter, which failed on it: "},
		{"named in destinations", envelope.TypeTrack, "blog/web", track("page_view", nil), "kenar,sales", "sales",
			Why{Reason: Named, Route: -1}, "its destinations name it"},
		{"destinations named others", envelope.TypeTrack, "shop/web", order, "kenar", "sales",
			Why{Reason: OtherDestinations, Route: -1}, "its destinations name other sinks (kenar)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := raw(t, tt.typ, tt.source, tt.data)
			ev.Destinations = tt.dest
			got := routes.Why(ev, tt.sink)
			err := got.Err
			got.Err = nil
			if got != tt.want {
				t.Errorf("Why = %+v, want %+v", got, tt.want)
			}
			if (err != nil) != (tt.name == "filter failed") {
				t.Errorf("Why's error %v", err)
			}
			got.Err = err
			if s := got.Explain(ev); !strings.Contains(s, tt.says) {
				t.Errorf("Explain = %q, want it to say %q", s, tt.says)
			}
			// Why agrees with Match, the one that routes.
			if chosen := routes.Match(ev); (got.Reason == Routed || got.Reason == Named) != contains(chosen, tt.sink) {
				t.Errorf("Why says %s, Match chose %v", got.Reason, chosen)
			}
		})
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Filters cost nothing to a table that has none, or whose filters are on
// routes the event's type and name do not select: routing allocates what
// it did before filters (mainMatch), so no data is decoded. A filter that
// reads data does decode it (the check can fail).
func TestRoutingWithoutSelectedFiltersDecodesNothing(t *testing.T) {
	plain := []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"chabok"}}}
	ev := raw(t, envelope.TypeTrack, "shop/web", track("order_paid", map[string]any{"amount": 5, "country": "IR"}))
	before := testing.AllocsPerRun(200, func() { mainMatch(plain, ev) })
	for _, c := range []struct {
		name   string
		routes []config.Route
		more   bool // allocates more than before filters
	}{
		{"no filters", plain, false},
		{"a filter on another type", append(slices.Clone(plain), config.Route{Types: []string{"com.shop.x"}, Filter: `data.amount > 1`, Sinks: []string{"hook"}}), false},
		{"a filter on another name", append(slices.Clone(plain), config.Route{Names: []string{"signup"}, Filter: `data.amount > 1`, Sinks: []string{"hook"}}), false},
		{"a filter on data, selected", append(slices.Clone(plain), config.Route{Filter: `data.properties.amount > 1`, Sinks: []string{"hook"}}), true},
	} {
		r := newRoutes(t, c.routes)
		got := testing.AllocsPerRun(200, func() { r.Match(ev) })
		if more := got > before; more != c.more {
			t.Errorf("%s: %v allocations per event, %v before filters; want more: %v", c.name, got, before, c.more)
		}
	}
}
