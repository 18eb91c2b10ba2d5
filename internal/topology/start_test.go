package topology_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/topology"
)

// A sink's events consumer records where it starts when it is created, and
// keeps it when a later start updates it: new events, or the first stored
// at or after a time.
func TestSinkConsumerRecordsItsStart(t *testing.T) {
	js, topo := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	publish := func(n int) {
		for range n {
			if _, err := js.Publish(ctx, topo.EventSubject("chapar.track"), []byte("{}")); err != nil {
				t.Fatal(err)
			}
		}
	}
	startOf := func(sink string, s topology.ConsumerSettings) uint64 {
		t.Helper()
		cons, err := topo.EnsureSink(ctx, js, sink, s)
		if err != nil {
			t.Fatal(err)
		}
		seq, err := topology.StartOf(cons.Events[0].CachedInfo())
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	settings := topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 10}
	publish(3)
	if got := startOf("a", settings); got != 4 {
		t.Errorf("new events after 3: start %d, want 4", got)
	}
	publish(2)
	if got := startOf("a", settings); got != 4 {
		t.Errorf("updated later: start %d, want 4 still", got)
	}
	from := time.Now()
	time.Sleep(10 * time.Millisecond) // the next event's store time is after from
	publish(2)
	later := settings
	later.Start = from
	if got := startOf("b", later); got != 6 {
		t.Errorf("from a time before events 6 and 7: start %d, want 6", got)
	}
	// A consumer without a recorded start that has delivered: just made
	// (its creator is between the two steps) says so, to be asked again.
	c, err := js.CreateConsumer(ctx, topo.EventsStream(), jetstream.ConsumerConfig{Durable: topology.SinkConsumer("c"), DeliverPolicy: jetstream.DeliverAllPolicy, AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
	}
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := topology.StartOf(info); !errors.Is(err, topology.ErrStartPending) {
		t.Errorf("a fresh consumer without a recorded start: %v, want ErrStartPending", err)
	}
}
