package dispatch_test

import (
	"errors"
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
//
// chabok is what cmd/bench's backlog scenarios measure; metrix-gateway adds
// the gateway's per-user time reservation (a KV round trip per event).
func BenchmarkEndToEnd(b *testing.B) {
	for _, vendor := range []string{emulator.Chabok, emulator.MetrixGateway} {
		b.Run(vendor, func(b *testing.B) { benchmarkEndToEnd(b, vendor) })
	}
}

func benchmarkEndToEnd(b *testing.B, vendor string) {
	e := testenv.New(b)
	sink := e.Sink("sink", vendor, slugs, nil)
	sink.Concurrency = 16
	d := e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"sink"}}})
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
		publishAsync(b, e.JS, subject, raws[i], ids[i])
	}
	<-e.JS.PublishAsyncComplete()
	testenv.Eventually(b, time.Minute, "all delivered", func() bool { return d.Tally.DeliveredTo("sink") == b.N })
	b.StopTimer()
}

// publishAsync publishes without waiting for the ack, and waits for the
// acks outstanding when the client has too many: on a busy machine the
// server falls behind, and the client's stall (200 ms) failed the run.
func publishAsync(b *testing.B, js jetstream.JetStream, subject string, raw []byte, id string) {
	for {
		_, err := js.PublishAsync(subject, raw, jetstream.WithMsgID(id))
		if errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			<-js.PublishAsyncComplete()
			continue
		}
		if err != nil {
			b.Fatal(err)
		}
		return
	}
}
