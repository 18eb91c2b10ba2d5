package redeliver

import (
	"testing"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

func TestDecide(t *testing.T) {
	routes := dispatch.NewRoutes([]config.Route{
		{Types: []string{envelope.TypeTrack}, Names: []string{"order_*"}, Sinks: []string{"hook"}},
		{Sinks: []string{"chabok"}},
	})
	track := func(name, subject, destinations string) *envelope.Event {
		return &envelope.Event{Envelope: envelope.Envelope{Type: envelope.TypeTrack, Subject: subject, Destinations: destinations},
			Track: &envelope.Track{Name: name}}
	}
	for _, c := range []struct {
		name string
		f    Filter
		ev   *envelope.Event
		want string
	}{
		{"routed", Filter{}, track("order_paid", "", ""), ""},
		{"not routed", Filter{}, track("signup", "", ""), skipNotRoute},
		{"not routed, all", Filter{All: true}, track("signup", "", ""), ""},
		{"destinations name the sink", Filter{}, track("signup", "", "hook"), ""},
		{"destinations name another", Filter{}, track("order_paid", "", "chabok"), skipNotRoute},
		{"type filter", Filter{Type: envelope.TypeIdentify}, track("order_paid", "", ""), skipFiltered},
		{"name pattern", Filter{Name: "order_*"}, track("order_paid", "", ""), ""},
		{"name pattern misses", Filter{Name: "order_*", All: true}, track("signup", "", ""), skipFiltered},
		{"subject", Filter{Subject: "user-1"}, track("order_paid", "user-1", ""), ""},
		{"subject misses", Filter{Subject: "user-1"}, track("order_paid", "user-2", ""), skipFiltered},
	} {
		if got := c.f.decide(routes, "hook", c.ev); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}
