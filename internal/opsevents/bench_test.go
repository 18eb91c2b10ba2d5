package opsevents_test

import (
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/metrics"
	"github.com/chapar-dev/chapar/internal/opsevents"
)

// The calls one successful delivery makes on its observer, with the
// metrics alone (ops_events off) and composed with the ops events
// publisher (on): what turning them on costs the hot path.
//
//	go test -run X -bench ObserverPerDelivery -count 3 ./internal/opsevents
func BenchmarkObserverPerDelivery(b *testing.B) {
	cfg := config.Default()
	cfg.Sinks = []config.Sink{{Name: "shop"}}
	cfg.OpsEvents.Enabled = true
	m := metrics.New("shop")
	for _, c := range []struct {
		name string
		obs  dispatch.Observer
	}{
		{"off", m},
		{"on", dispatch.Observers(m, opsevents.New(cfg, nil, m))},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c.obs.InFlight("shop", 1)
					c.obs.VendorRequest("shop", time.Millisecond, nil)
					c.obs.Delivered("shop", 2*time.Millisecond)
					c.obs.InFlight("shop", -1)
				}
			})
		})
	}
}
