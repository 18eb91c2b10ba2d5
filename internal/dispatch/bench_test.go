package dispatch_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// BenchmarkEndToEnd is one event through the whole path (publish, route,
// queue, deliver, ack) in one process: for profiles, not for quoting (the
// load harness in cmd/bench is for that).
func BenchmarkEndToEnd(b *testing.B) {
	e := testenv.New(b)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 16
	d := e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}})
	raws := make([][]byte, b.N)
	ids := make([]string, b.N)
	for i := range b.N {
		env := testenv.Track(b, "order_paid", fmt.Sprintf("u%d", i))
		raws[i], _ = env.Marshal()
		ids[i] = env.ID
	}
	subject := e.Topo.EventSubject("chapar.track")
	b.ResetTimer()
	for i := range b.N {
		if _, err := e.JS.PublishAsync(subject, raws[i], jetstream.WithMsgID(ids[i])); err != nil {
			b.Fatal(err)
		}
	}
	<-e.JS.PublishAsyncComplete()
	testenv.Eventually(b, time.Minute, "all delivered", func() bool { return d.Tally.DeliveredTo("gateway") == b.N })
	b.StopTimer()
}
