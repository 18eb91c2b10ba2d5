package topology_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/embedded"
	"github.com/chapar-dev/chapar/internal/topology"
)

func start(t *testing.T) (jetstream.JetStream, topology.Topology) {
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
	topo := topology.New(config.Default().Streams)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	// Ensure is idempotent: every replica runs it.
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	return js, topo
}

// A scheduled retry is stored in the retries stream, arrives on the sink's
// due subject no earlier than asked, with Chapar's headers, and leaves the
// work queue once acked.
func TestScheduledRetryArrivesWhenDueAndLeaves(t *testing.T) {
	js, topo := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := topo.EnsureSink(ctx, js, "s1", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 10})
	if err != nil {
		t.Fatal(err)
	}
	at := time.Now().Add(1500 * time.Millisecond)
	m := nats.NewMsg(topo.RetryWaitSubject("s1", "7-0-1"))
	m.Header.Set(topology.HeaderAttempts, "1")
	m.Data = []byte(`{"id":"e1"}`)
	topology.Schedule(m.Header, at, topo.RetryDueSubject("s1"))
	for range 2 { // written twice: stored once
		if _, err := js.PublishMsg(ctx, m, jetstream.WithMsgID("r1")); err != nil {
			t.Fatal(err)
		}
	}
	msgs, err := cons.Retries.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var got jetstream.Msg
	for msg := range msgs.Messages() {
		got = msg
	}
	if got == nil {
		t.Fatalf("no retry arrived: %v", msgs.Error())
	}
	t.Logf("asked %s, arrived %s", at.Format(time.StampMilli), time.Now().Format(time.StampMilli))
	if now := time.Now(); now.Before(at) {
		t.Errorf("retry arrived at %s, before %s", now, at)
	}
	if got.Headers().Get(topology.HeaderAttempts) != "1" || string(got.Data()) != `{"id":"e1"}` {
		t.Errorf("retry lost its headers or body: %v %q", got.Headers(), got.Data())
	}
	if err := got.DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	idle := func() bool { ok, err := topo.Idle(ctx, js, []string{"s1"}); return err == nil && ok }
	deadline := time.Now().Add(5 * time.Second)
	for !idle() {
		if time.Now().After(deadline) {
			st, _ := js.Stream(ctx, topo.RetriesStream())
			info, _ := st.Info(ctx, jetstream.WithSubjectFilter(">"))
			t.Fatalf("retries stream not empty after ack: %+v", info.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
