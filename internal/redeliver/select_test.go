package redeliver

import (
	"testing"

	"golang.org/x/time/rate"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

func TestDecide(t *testing.T) {
	routes, err := dispatch.NewRoutes([]config.Route{
		{Types: []string{envelope.TypeTrack}, Names: []string{"order_*"}, Sinks: []string{"hook"}},
		{Sinks: []string{"chabok"}},
	})
	if err != nil {
		t.Fatal(err)
	}
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

// The job's pace is the sink's rate_limit: its rate and burst (at least
// one), none without one.
func TestLimiterIsTheSinksRateLimit(t *testing.T) {
	if Limiter(nil) != nil || Limiter(&config.RateLimit{}) != nil {
		t.Error("a pace without a rate_limit")
	}
	l, ok := Limiter(&config.RateLimit{PerSecond: 50, Burst: 0}).(*rate.Limiter)
	if !ok || l.Limit() != 50 || l.Burst() != 1 {
		t.Errorf("limiter %+v", l)
	}
	if l := Limiter(&config.RateLimit{PerSecond: 7, Burst: 3}).(*rate.Limiter); l.Limit() != 7 || l.Burst() != 3 {
		t.Errorf("limiter %v/%d", l.Limit(), l.Burst())
	}
}
