package dlq

import (
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/outcome"
)

func TestFilterMatch(t *testing.T) {
	at := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	r := &Record{Seq: 7, Sink: "chabok", Reason: outcome.VendorRejected, Status: 400, Code: "INVALID_PARAMETERS",
		EventID: "e-1", EventType: "chapar.track", LastAttempt: at}
	for _, c := range []struct {
		name string
		f    Filter
		want bool
	}{
		{"empty filter matches everything", Filter{}, true},
		{"every field agreeing", Filter{Sink: "chabok", Status: 400, Code: "INVALID_PARAMETERS", Reason: outcome.VendorRejected,
			EventID: "e-1", EventType: "chapar.track", Since: at, Until: at, After: 6}, true},
		{"other sink", Filter{Sink: "kenar"}, false},
		{"other status", Filter{Status: 503}, false},
		{"other code", Filter{Code: "BAD_REQUEST"}, false},
		{"other reason", Filter{Reason: outcome.RetriesExhausted}, false},
		{"other event id", Filter{EventID: "e-2"}, false},
		{"event type matches", Filter{EventType: "chapar.track"}, true},
		{"other event type", Filter{EventType: "chapar.purchase"}, false},
		{"event type is exact, not a prefix", Filter{EventType: "chapar"}, false},
		{"since after the last attempt", Filter{Since: at.Add(time.Second)}, false},
		{"until before the last attempt", Filter{Until: at.Add(-time.Second)}, false},
		{"cursor before the record", Filter{After: 6}, true},
		{"cursor at the record (already shown)", Filter{After: 7}, false},
		{"cursor past the record", Filter{After: 8}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := c.f.Match(r); got != c.want {
				t.Errorf("Match(%+v) = %v, want %v", c.f, got, c.want)
			}
		})
	}
}

func TestParseWhen(t *testing.T) {
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Time
		err  bool
	}{
		{"", time.Time{}, false},
		{"2026-11-29T08:30:00Z", time.Date(2026, 11, 29, 8, 30, 0, 0, time.UTC), false},
		{"2026-11-29T08:30:00+03:30", time.Date(2026, 11, 29, 5, 0, 0, 0, time.UTC), false},
		{"2026-11-29T08:30", time.Date(2026, 11, 29, 8, 30, 0, 0, time.UTC), false}, // a browser's datetime-local
		{"2h", now.Add(-2 * time.Hour), false},
		{"yesterday", time.Time{}, true},
	} {
		got, err := ParseWhen(c.in, now)
		if (err != nil) != c.err || !got.Equal(c.want) {
			t.Errorf("ParseWhen(%q) = %v, %v; want %v (error: %v)", c.in, got, err, c.want, c.err)
		}
	}
}
