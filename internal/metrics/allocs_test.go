package metrics_test

import (
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/metrics"
)

// What every delivered event costs the metrics: its sink's cached series,
// no label lookups and nothing allocated.
func TestADeliveredEventsMetricsAllocateNothing(t *testing.T) {
	m := metrics.New("chabok")
	event := func() {
		m.Received()
		m.InFlight("chabok", 1)
		m.VendorRequest("chabok", time.Millisecond, nil)
		m.InFlight("chabok", -1)
		m.Delivered("chabok", 2*time.Millisecond)
	}
	event()
	if n := testing.AllocsPerRun(100, event); n != 0 {
		t.Errorf("a delivered event's metrics allocate %.0f times, want 0", n)
	}
}
