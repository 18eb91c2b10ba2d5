package dispatch_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
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

// BenchmarkKeyedHeld measures what an event held by a keyed batcher costs
// in memory: a Metrix gateway sink batched per user (max_items 1,000,
// concurrency 16) whose vendor does not answer, so its batcher fills to
// its hold; the heap in use (after a GC) once it holds them, less before,
// per held event. It includes the embedded JetStream server's share (a
// consumer's pending acks) and the 16 requests the vendor holds. With
// HELD_HEAPPROFILE set, a heap profile of that moment is written there
// (run with -memprofilerate 1 to sample every allocation).
//
//	go test ./internal/dispatch/ -run '^$' -bench KeyedHeld -benchtime 1x
func BenchmarkKeyedHeld(b *testing.B) {
	const maxAckPending, concurrency, users = 7000, 16, 1000
	// What the batcher holds (newBatcher), less its prefetch (heldPrefetch).
	const hold = maxAckPending - 4*concurrency - concurrency
	for range b.N {
		e := testenv.New(b)
		vendor := e.Emu.Vendor(emulator.MetrixGateway)
		vendor.SetFault(emulator.Fault{Status: 200, Latency: 5 * time.Minute})
		sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
		sink.Concurrency, sink.MaxAckPending, sink.Timeout = concurrency, maxAckPending, 5*time.Minute
		sink = batched(sink, 1000, 50*time.Millisecond)
		var calls atomic.Int32
		wrap := func(_ string, s sinks.Sink) sinks.Sink { return countedBatches{s.(sinks.KeyedBatchSink), &calls} }
		e.StartWrapped([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}}, wrap, func(d *config.Dispatcher) { d.AckWait = time.Minute })
		raws := make([][]byte, maxAckPending)
		ids := make([]string, maxAckPending)
		for i := range maxAckPending {
			env := benchTrack(b, i, users)
			raws[i], _ = env.Marshal()
			ids[i] = env.ID
		}
		before := heapInUse()
		subject := e.Topo.EventSubject("chapar.track")
		for i := range raws {
			publishAsync(b, e.JS, subject, raws[i], ids[i])
		}
		<-e.JS.PublishAsyncComplete()
		c, err := e.JS.Consumer(context.Background(), e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
		if err != nil {
			b.Fatal(err)
		}
		var held int
		testenv.Eventually(b, time.Minute, "the batcher full", func() bool {
			info, err := c.Info(context.Background())
			if err != nil {
				return false
			}
			held = info.NumAckPending
			return calls.Load() == concurrency && held >= hold
		})
		raws, ids = nil, nil
		after := heapInUse()
		if path := os.Getenv("HELD_HEAPPROFILE"); path != "" {
			f, err := os.Create(path)
			if err != nil {
				b.Fatal(err)
			}
			if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
		b.ReportMetric(float64(after-before)/float64(held), "B/held-event")
		b.ReportMetric(float64(held), "held")
	}
}

// countedBatches counts a keyed sink's DeliverBatch calls.
type countedBatches struct {
	sinks.KeyedBatchSink
	calls *atomic.Int32
}

func (c countedBatches) DeliverBatch(ctx context.Context, ds []*sinks.Delivery) []error {
	c.calls.Add(1)
	return c.KeyedBatchSink.DeliverBatch(ctx, ds)
}

// benchTrack is event i of cmd/bench's batching scenarios (publish.go):
// user i mod users, the same properties.
func benchTrack(b *testing.B, i, users int) *envelope.Envelope {
	env, err := envelope.New(envelope.TypeTrack, "bench", envelope.Track{
		Name: "order_paid",
		Properties: map[string]any{
			"benchSeq": i, "sentAt": strconv.FormatInt(time.Now().UnixNano(), 10),
			"orderId": fmt.Sprintf("A-%d", i), "items": 3, "firstOrder": true,
		},
		User: envelope.User{ID: fmt.Sprintf("user-%d", i%users), ChabokInstallationID: "inst-1"},
	})
	if err != nil {
		b.Fatal(err)
	}
	return env
}

// heapInUse is the heap in use after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
