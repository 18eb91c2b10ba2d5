package dispatch

import (
	"path"
	"slices"
	"testing"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// BenchmarkRoutesMatch is the cost of routing one event, with and without
// filters, against peers in the same run: the table as it was before
// filters (mainMatch), and the parse every event already pays. A table
// without filters, or whose filters are on routes the event's type and
// name do not select, must cost what mainMatch does.
//
//	go test -run '^$' -bench BenchmarkRoutesMatch -benchmem -count 5 ./internal/dispatch
func BenchmarkRoutesMatch(b *testing.B) {
	plain := []config.Route{
		{Types: []string{envelope.TypeTrack}, Names: []string{"order_*", "signup"}, Sinks: []string{"chabok", "metrix"}},
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"metrix", "gateway"}},
		{Types: []string{envelope.TypeIdentify}, Sinks: []string{"gateway"}},
	}
	with := func(rs ...config.Route) []config.Route { return append(slices.Clone(plain), rs...) }
	raw, err := envelope.New(envelope.TypeTrack, "shop/web", envelope.Track{
		Name:       "order_paid",
		Properties: map[string]any{"orderId": "A-1", "items": 3, "amount": 2500000, "currency": "IRR", "country": "IR", "coupon": "NOWRUZ"},
		User:       envelope.User{ID: "u1", ChabokInstallationID: "inst-u1", MetrixUserID: "mx-u1", IP: "203.0.113.7"},
	})
	if err != nil {
		b.Fatal(err)
	}
	body, _ := raw.Marshal()
	ev, err := envelope.ParseMessage(nil, body, envelope.DefaultMaxBytes)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("peer=parse", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := envelope.ParseMessage(nil, body, envelope.DefaultMaxBytes); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("peer=main", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if len(mainMatch(plain, ev)) != 2 {
				b.Fatal("unrouted")
			}
		}
	})
	for _, c := range []struct {
		name   string
		routes []config.Route
		want   int
	}{
		{"no_filters", plain, 2},
		{"filter_not_selected", with(config.Route{Types: []string{"com.shop.order.placed"}, Filter: `data.amount >= 1000000`, Sinks: []string{"hook"}}), 2},
		{"filter_on_source", with(config.Route{Filter: `source startsWith "shop/"`, Sinks: []string{"hook"}}), 3},
		{"filter_on_data", with(config.Route{Filter: `data.properties.amount >= 1000000`, Sinks: []string{"hook"}}), 3},
		{"two_filters_on_data", with(config.Route{Filter: `data.properties.amount >= 1000000`, Sinks: []string{"hook"}},
			config.Route{Filter: `data.properties.country == "IR" && data.user.id != ""`, Sinks: []string{"sales"}}), 4},
	} {
		r, err := NewRoutes(c.routes)
		if err != nil {
			b.Fatal(err)
		}
		b.Run("table="+c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if got := r.Match(ev); len(got) != c.want {
					b.Fatalf("matched %v, want %d sinks", got, c.want)
				}
			}
		})
	}
}

// mainMatch is Routes.Match as it was before filters, the peer of the
// benchmark.
func mainMatch(routes []config.Route, ev *envelope.Event) []string {
	if d := ev.DestinationList(); len(d) > 0 {
		return uniq(d)
	}
	var out []string
	name := ev.Name()
	for _, rt := range routes {
		if len(rt.Types) > 0 && !slices.Contains(rt.Types, ev.Type) {
			continue
		}
		if len(rt.Names) > 0 && !mainMatchAny(rt.Names, name) {
			continue
		}
		out = append(out, rt.Sinks...)
	}
	return uniq(out)
}

func mainMatchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}
