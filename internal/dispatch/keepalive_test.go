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
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const ackWait = 300 * time.Millisecond
	a := newAckWaitConsumer(ctx, t, "KA", "ka", ackWait)
	js, fetch := a.js, a.fetch
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

// ackWaitConsumer is a plain stream with one durable consumer of a short
// ack_wait on a fresh embedded server: what a keep-alive or a held
// message is settled against, without Chapar's layout.
type ackWaitConsumer struct {
	nc *nats.Conn
	js jetstream.JetStream
	c  jetstream.Consumer
	t  *testing.T
}

func newAckWaitConsumer(ctx context.Context, t *testing.T, stream, subjects string, ackWait time.Duration) *ackWaitConsumer {
	t.Helper()
	s, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{subjects}, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	c, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: "c", AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait})
	if err != nil {
		t.Fatal(err)
	}
	return &ackWaitConsumer{nc: nc, js: js, c: c, t: t}
}

// fetch is the next message, if one comes within wait.
func (a *ackWaitConsumer) fetch(wait time.Duration) jetstream.Msg {
	a.t.Helper()
	b, err := a.c.Fetch(1, jetstream.FetchMaxWait(wait))
	if err != nil {
		a.t.Fatal(err)
	}
	for m := range b.Messages() {
		return m
	}
	return nil
}

// A sink's keepers are closed by a closeAll deferred before they are added
// (run defers it, then adds one per consumer): each keeper's ticker stops.
func TestKeepersDeferredCloseStopsThoseAddedAfter(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := newAckWaitConsumer(ctx, t, "KS", "ks.>", time.Second)
	var added []*keeper
	func() {
		var ks keepers
		defer ks.closeAll()
		added = append(added, ks.add(a.c), ks.add(a.c))
	}()
	for i, k := range added {
		select {
		case <-k.stop:
		default:
			t.Errorf("keeper %d not closed: its ticker runs on", i)
		}
	}
}
