package dispatch_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// BenchmarkBatch drives b.N track events of 1,000 users through the whole
// path (publish, route, queue, deliver, ack) in one process, to Chabok and
// to the Metrix gateway, one event per request and batched. It reports
// events/s from the first publish to the last ack; the publisher, the
// JetStream server, the dispatcher and the emulator share the machine.
//
//	go test ./internal/dispatch/ -run '^$' -bench Batch -benchtime 50000x
func BenchmarkBatch(b *testing.B) {
	for _, vendor := range []string{emulator.Chabok, emulator.MetrixGateway} {
		for _, mode := range []string{"per-event", "batch"} {
			b.Run(vendor+"/"+mode, func(b *testing.B) {
				e := testenv.New(b)
				var sink config.Sink
				if vendor == emulator.Chabok {
					sink = e.Sink("bench", vendor, nil, nil)
				} else {
					sink = e.Sink("bench", vendor, slugs, nil)
				}
				sink.Concurrency = 16
				if mode == "batch" {
					// Chabok takes 1,000 per request; the gateway's requests
					// are per user, so its batches span several events per user.
					items := map[string]int{emulator.Chabok: 1000, emulator.MetrixGateway: 5000}[vendor]
					sink.Concurrency = 4
					sink = batched(sink, items, 50*time.Millisecond)
					sink.MaxAckPending = items * (sink.Concurrency + 1)
				}
				d := e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"bench"}}})
				raws := make([][]byte, b.N)
				ids := make([]string, b.N)
				for i := range b.N {
					env := testenv.Track(b, "order_paid", fmt.Sprintf("u%d", i%1000))
					raws[i], _ = env.Marshal()
					ids[i] = env.ID
				}
				subject := e.Topo.EventSubject("chapar.track")
				b.ResetTimer()
				start := time.Now()
				for i := range b.N {
					publishAsync(b, e.JS, subject, raws[i], ids[i])
				}
				<-e.JS.PublishAsyncComplete()
				testenv.Eventually(b, 5*time.Minute, "all delivered", func() bool { return d.Tally.DeliveredTo("bench") == b.N })
				took := time.Since(start)
				b.StopTimer()
				v := e.Emu.Vendor(vendor)
				b.ReportMetric(float64(b.N)/took.Seconds(), "events/s")
				b.ReportMetric(float64(v.Count(0))/float64(b.N), "requests/event")
				if n := v.Count(200); n != v.Count(0) {
					b.Errorf("%d of %d requests failed", v.Count(0)-n, v.Count(0))
				}
			})
		}
	}
}
