package dispatch

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/embedded"
)

// A delivery's keep-alive, reused from message to message: each message a
// keepOne holds is not handed out again past ack_wait, one released is, and
// the reuse makes nothing per message. Against a real JetStream.
func TestKeepOneKeepsEachMessageAndReleaseStops(t *testing.T) {
	s, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "KA", Subjects: []string{"ka"}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	const ackWait = 300 * time.Millisecond
	c, err := js.CreateConsumer(ctx, "KA", jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait})
	if err != nil {
		t.Fatal(err)
	}
	// fetch is the next message, if one comes within wait.
	fetch := func(wait time.Duration) jetstream.Msg {
		t.Helper()
		b, err := c.Fetch(1, jetstream.FetchMaxWait(wait))
		if err != nil {
			t.Fatal(err)
		}
		for m := range b.Messages() {
			return m
		}
		return nil
	}
	publish := func() jetstream.Msg {
		t.Helper()
		if _, err := js.Publish(ctx, "ka", []byte("x")); err != nil {
			t.Fatal(err)
		}
		m := fetch(5 * time.Second)
		if m == nil {
			t.Fatal("the message published was not fetched within 5s")
		}
		return m
	}
	var pool alivePool
	for i := range 3 {
		m := publish()
		k := pool.keep(ackWait/3, m)
		// Asked for again over four ack_waits: JetStream must not hand it
		// out while it is kept alive.
		if again := fetch(4 * ackWait); again != nil {
			t.Fatalf("message %d handed out again while kept alive", i)
		}
		pool.release(k)
		if err := m.Ack(); err != nil {
			t.Fatal(err)
		}
	}
	// Released and not settled: handed out again after ack_wait.
	m := publish()
	pool.release(pool.keep(ackWait/3, m))
	again := fetch(5 * time.Second)
	if again == nil {
		t.Fatal("a released message was not handed out again")
	}
	if meta, _ := again.Metadata(); meta == nil || meta.NumDelivered != 2 {
		t.Fatalf("after release the message came back as %+v, want its second delivery", meta)
	}
	_ = again.Ack()
}

func TestKeepOneAllocatesNothingOnceWarm(t *testing.T) {
	if raceEnabled {
		t.Skip("sync.Pool drops items at random under the race detector")
	}
	var pool alivePool
	pool.release(pool.keep(time.Hour, nil))
	if got := testing.AllocsPerRun(100, func() { pool.release(pool.keep(time.Hour, nil)) }); got != 0 {
		t.Errorf("a delivery's keep-alive allocates %.0f times, want 0", got)
	}
}
