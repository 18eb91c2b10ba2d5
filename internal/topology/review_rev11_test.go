package topology

// Review of b3e1827 and 0e42e13 (RestoreLead widens to the stream's
// subjects, not an empty filter; filtersOn).

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// signalled publishes n events on the consumer's stream with a pull
// waiting on it, and reports whether the pull was handed the first one
// (woken by the store, not by its expiry) and the consumer's NumPending
// after (n-1 if it counts them).
func signalled(ctx context.Context, t *testing.T, js jetstream.JetStream, topo Topology, c jetstream.Consumer, n int) (woken bool, pending uint64) {
	t.Helper()
	got := make(chan uint64, 1)
	go func() {
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(8*time.Second))
		if err != nil {
			got <- 0
			return
		}
		for m := range batch.Messages() {
			meta, _ := m.Metadata()
			_ = m.Ack()
			got <- meta.Sequence.Stream
			return
		}
		got <- 0
	}()
	waitFor(t, 5*time.Second, "a pull waiting on the consumer", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.NumWaiting > 0
	})
	for range n {
		publishOn(ctx, t, js, topo, "com.shop.order.shipped")
	}
	woken = <-got != 0 // an unwoken pull returns empty at its 8 s expiry
	info, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return woken, info.NumPending
}

// Suspicion 1: the healer recreates a lost events consumer with an empty
// filter when another config owns the sink (heal.go, "the whole stream
// is a superset of any"). nats-server 2.15.2's empty signal list comes
// from consumer.updateConfig (swapSigSubs with an empty, non-nil list);
// a consumer *created* without a filter is registered on the full
// wildcard (setConsumer, signalSubs), and RecreateConsumer's second write
// (the same empty filter) does not change its filter, so swapSigSubs is
// not called. Proved: the recreated consumer counts what is stored after
// it and a waiting pull is woken; RestoreLead on it (no mark) widens it
// from none to the stream's subjects, which registers them. The control
// (a consumer updated from a filter to none) is logged, not asserted: it
// is the server's defect b3e1827 avoids.
func TestReviewRev11AConsumerCreatedWithoutAFilterIsSignalled(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	stream := topo.EventsStream()
	narrow := EventFilter{ByType: true, Types: []string{"com.shop.order.paid"}}
	if _, err := topo.EnsureSink(ctx, js, "gw", ConsumerSettings{AckWait: 30 * time.Second, MaxAckPending: 100, Fence: "f", Filter: narrow}); err != nil {
		t.Fatal(err)
	}
	// As heal.go: the config it knew, the filter cleared, the owner's fence.
	cfg := consumerInfo(ctx, t, js, stream, "gw").Config
	if err := js.DeleteConsumer(ctx, stream, SinkConsumer("gw")); err != nil {
		t.Fatal(err)
	}
	cfg.FilterSubject, cfg.FilterSubjects = "", nil
	cfg.Metadata[FenceMetadata] = "other"
	from := publishOn(ctx, t, js, topo, "com.shop.order.shipped")
	c, created, err := RecreateConsumer(ctx, js, stream, cfg, from)
	if err != nil || !created {
		t.Fatalf("RecreateConsumer: created %v, %v", created, err)
	}
	if f := FiltersOf(c.CachedInfo().Config); len(f) != 0 {
		t.Fatalf("recreated with filter %v, want none", f)
	}
	if err := drain(ctx, c); err != nil {
		t.Fatal(err)
	}
	if woken, pending := signalled(ctx, t, js, topo, c, 3); !woken || pending != 2 {
		t.Errorf("created without a filter: a waiting pull woken %v, NumPending %d; want woken, 2", woken, pending)
	}
	if err := drain(ctx, c); err != nil {
		t.Fatal(err)
	}
	// The healer that knew the mark puts it back: from none to the
	// stream's subjects, no hold (filtersOn: it read every subject).
	if _, prior, err := RestoreLead(ctx, js, stream, SinkConsumer("gw"), time.Now().Add(30*time.Second)); err != nil || prior.Exists {
		t.Fatalf("RestoreLead: prior %+v, %v; want none", prior, err)
	}
	if woken, pending := signalled(ctx, t, js, topo, c, 3); !woken || pending != 2 {
		t.Errorf("RestoreLead from no filter to the stream's subjects: a waiting pull woken %v, NumPending %d; want woken, 2", woken, pending)
	}

	// Control: the server's defect, on an update from a filter to none.
	if _, err := topo.EnsureSink(ctx, js, "ctl", ConsumerSettings{AckWait: 30 * time.Second, MaxAckPending: 100, Fence: "f", Filter: narrow}); err != nil {
		t.Fatal(err)
	}
	ccfg := consumerInfo(ctx, t, js, stream, "ctl").Config
	ccfg.FilterSubject, ccfg.FilterSubjects = "", nil
	ctl, err := js.UpdateConsumer(ctx, stream, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	woken, pending := signalled(ctx, t, js, topo, ctl, 3)
	t.Logf("control, updated from a filter to none: a waiting pull woken %v, NumPending %d (2 if the server counted them)", woken, pending)
}

// drain acks whatever c has pending now.
func drain(ctx context.Context, c jetstream.Consumer) error {
	for {
		info, err := c.Info(ctx)
		if err != nil {
			return err
		}
		if info.NumPending == 0 {
			return nil
		}
		batch, err := c.Fetch(int(info.NumPending), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return err
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if err := m.DoubleAck(ctx); err != nil {
				return err
			}
		}
		if n == 0 {
			return errors.New("pending, but nothing fetched")
		}
	}
}

// streamHookJS runs afterStream once, right after the first Stream lookup
// it forwards, and fails every Stream lookup once a consumer update went
// through (PassedTo cannot read).
type streamHookJS struct {
	jetstream.JetStream
	afterStream func()
	updated     bool
}

func (h *streamHookJS) Stream(ctx context.Context, stream string) (jetstream.Stream, error) {
	if h.updated {
		return nil, errors.New("review: the stream does not answer")
	}
	s, err := h.JetStream.Stream(ctx, stream)
	if f := h.afterStream; f != nil {
		h.afterStream = nil
		f()
	}
	return s, err
}

func (h *streamHookJS) UpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := h.JetStream.UpdateConsumer(ctx, stream, cfg)
	h.updated = h.updated || err == nil
	return c, err
}

// Suspicion 3: RestoreLead reads the stream (its subjects) before it
// holds the consumer. A replica's narrow pull scans past a stray stored
// between that read and the hold, and PassedTo cannot read once the
// consumer is widened: the bound that stands must be read under the
// hold, at or above the stray (b3e1827 took it from the read before the
// hold: the stray was above it, taken for delivered by the healer's
// sweep, and neither delivered nor dead-lettered; 0e42e13 reads it after
// the hold again).
func TestReviewRev11RestoreLeadsBoundIsReadUnderItsHold(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	stream := topo.EventsStream()
	c, _ := narrowPastAStray(ctx, t, js, topo)
	var stray2 uint64
	h := &streamHookJS{JetStream: js}
	h.afterStream = func() {
		stray2 = publishOn(ctx, t, js, topo, "com.shop.order.shipped")
		batch, err := c.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond))
		if err != nil {
			t.Error(err)
			return
		}
		for range batch.Messages() {
			t.Error("the narrow consumer delivered the stray")
		}
	}
	_, prior, err := RestoreLead(ctx, h, stream, SinkConsumer("gw"), time.Now().Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if !prior.Exists || prior.Delivered < stray2 {
		t.Errorf("RestoreLead's prior %+v with PassedTo unreadable: the stray at %d, passed over before the hold, is above the bound: "+
			"taken for delivered by the healer's sweep, judged by no one", prior, stray2)
	}
	publishOn(ctx, t, js, topo, "com.shop.order.shipped")
	if got := firstDelivered(t, c); got <= stray2 {
		t.Errorf("the widened consumer delivered %d first: the stray at %d was not passed over (the test's premise)", got, stray2)
	}
}
