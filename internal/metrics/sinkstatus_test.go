package metrics

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/chapar-dev/chapar/internal/sinks"
)

// The sinks page reads what the observer methods recorded: counts, rates
// over the last five minutes only, the breaker, the last error.
func TestSinkStatusBookkeeping(t *testing.T) {
	now := time.Date(2026, 11, 30, 10, 0, 0, 0, time.UTC)
	m := New("chabok")
	m.status.now = func() time.Time { return now }
	read := func(sink string) SinkStatus {
		s := SinkStatus{Name: sink}
		m.status.status(&s)
		return s
	}
	if s := read("chabok"); s.Breaker != "closed" || s.Delivered != 0 || s.LastError != nil {
		t.Fatalf("a sink nothing happened to: %+v", s)
	}
	for range 30 {
		m.Delivered("chabok", time.Millisecond)
	}
	m.Retried("chabok", 503)
	m.VendorRequest("chabok", time.Millisecond, &sinks.Error{Transient: true, Status: 503, Code: "UNAVAILABLE", Message: "down"})
	m.DeadLettered("chabok", "vendor_rejected", 400, "INVALID_PARAMETERS")
	m.BreakerChanged("chabok", gobreaker.StateOpen)
	now = now.Add(time.Minute)

	s := read("chabok")
	for _, c := range []struct {
		what      string
		got, want any
	}{
		{"breaker", s.Breaker, "open"},
		{"delivered", s.Delivered, uint64(30)},
		{"retried", s.Retried, uint64(1)},
		{"dead-lettered", s.DeadLettered, uint64(1)},
		{"window since start", s.Window, time.Minute},
		{"delivered rate", s.DeliveredRate, 0.5},
		{"last error status", s.LastError.Status, 503},
		{"last error code", s.LastError.Code, "UNAVAILABLE"},
		{"last error text", s.LastError.Message, "transient failure: HTTP 503 UNAVAILABLE: down"},
		{"last dead letter", *s.LastDeadLetter, SinkError{At: now.Add(-time.Minute), Reason: "vendor_rejected", Status: 400, Code: "INVALID_PARAMETERS"}},
	} {
		if c.got != c.want {
			t.Errorf("%s = %v, want %v", c.what, c.got, c.want)
		}
	}

	// Six minutes on, the rates forget the burst; the counts do not.
	now = now.Add(6 * time.Minute)
	m.Delivered("chabok", time.Millisecond)
	s = read("chabok")
	if s.Window != 5*time.Minute || s.Delivered != 31 || s.DeliveredRate != 1.0/300 || s.RetriedRate != 0 {
		t.Errorf("after the window: window %s, delivered %d, rate %g, retried rate %g", s.Window, s.Delivered, s.DeliveredRate, s.RetriedRate)
	}

	// A request error that is not a sink's is kept as text, clipped.
	m.VendorRequest("chabok", time.Millisecond, errors.New(strings.Repeat("é", 600)))
	if le := read("chabok").LastError; le.Status != 0 || len(le.Message) > statusErrorBytes+len("…") || !strings.HasSuffix(le.Message, "é…") {
		t.Errorf("long error kept as %d bytes: %q…", len(le.Message), le.Message[:20])
	}

	// A name no sink can have is not kept (it may come from a header).
	m.Delivered("Not A Sink!", time.Millisecond)
	if _, ok := m.status.sinks["Not A Sink!"]; ok {
		t.Error("an invalid sink name was kept")
	}
}
