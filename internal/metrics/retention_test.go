package metrics_test

import (
	"context"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/metrics"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// value is a series' value in a /metrics body, or -1 when it is absent.
func value(t *testing.T, body, series string) float64 {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return -1
}

// The events streams keep an event for max_age, delivered or not, so a
// sink whose oldest unacked event nears max_age is about to lose it: the
// age is reported per consumer, from the first message past its ack floor
// (not the first in the stream, which every sink may have acked), next to
// the stream's max_age and size.
func TestOldestPendingAgeAndStreamLimits(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := e.Topo.EnsureSink(ctx, e.JS, "chabok", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 10})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New("chabok")
	m.WatchConsumers(e.JS, map[string][]string{topology.SinkConsumer("chabok"): e.Topo.EventsStreams()})
	srv := httptest.NewServer(m.Admin(e.NC, new(atomic.Bool)))
	defer srv.Close()
	oldest := `chapar_consumer_oldest_pending_seconds{consumer="sink-chabok",sink="chabok",stream="CHAPAR_EVENTS"}`
	scrape := func() string { _, body := get(t, srv.URL+"/metrics"); return body }

	body := scrape()
	if v := value(t, body, oldest); v != 0 {
		t.Errorf("nothing published: oldest pending %v, want 0", v)
	}
	if v := value(t, body, `chapar_stream_max_age_seconds{stream="CHAPAR_EVENTS"}`); v != (7 * 24 * time.Hour).Seconds() {
		t.Errorf("max_age %v, want a week", v)
	}
	if v := value(t, body, `chapar_stream_max_bytes{stream="CHAPAR_EVENTS"}`); v != 0 {
		t.Errorf("max_bytes reported as %v for an unlimited stream, want 0", v)
	}

	first := e.Publish(testenv.Track(t, "order_paid", "u1"))
	// Setup, not a wait for a condition: the two events' ages must differ
	// by more than a scrape takes, to tell which one is measured.
	time.Sleep(300 * time.Millisecond)
	second := e.Publish(testenv.Track(t, "order_paid", "u2"))
	st, err := e.JS.Stream(ctx, e.Topo.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	stored := func(seq uint64) time.Time {
		msg, err := st.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		return msg.Time
	}
	t1, t2 := stored(first.Sequence), stored(second.Sequence)

	// Both pending: the first one's age.
	testenv.Eventually(t, 5*time.Second, "both events pending", func() bool {
		info, err := cons.Events[0].Info(ctx)
		return err == nil && info.NumPending == 2
	})
	before := time.Since(t1)
	v := value(t, scrape(), oldest)
	if after := time.Since(t1); v < before.Seconds() || v > after.Seconds() {
		t.Errorf("both pending: oldest %vs, want the first event's age, %v to %v", v, before, after)
	}

	// The first acked, the second delivered and not acked: the second's.
	batch, err := cons.Events[0].Fetch(2, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for msg := range batch.Messages() {
		if meta, _ := msg.Metadata(); meta != nil && meta.Sequence.Stream == first.Sequence {
			if err := msg.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	before = time.Since(t2)
	v = value(t, scrape(), oldest)
	if after := time.Since(t2); v < before.Seconds() || v > after.Seconds() {
		t.Errorf("the first acked: oldest %vs, want the second event's age, %v to %v", v, before, after)
	}
	if v := value(t, scrape(), `chapar_stream_bytes{stream="CHAPAR_EVENTS"}`); v <= 0 {
		t.Errorf("stream bytes %v with two events kept", v)
	}
}

// A sink reading only its routes' types (several filter subjects): its
// oldest pending event is the oldest of those types past its ack floor,
// not an older event of another type it is never delivered.
func TestOldestPendingOfAConsumerReadingSomeTypes(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	filter := topology.EventFilter{ByType: true, Types: []string{envelope.TypeTrack, envelope.TypePurchase}}
	if _, err := e.Topo.EnsureSink(ctx, e.JS, "chabok", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 10, Filter: filter}); err != nil {
		t.Fatal(err)
	}
	m := metrics.New("chabok")
	m.WatchConsumers(e.JS, map[string][]string{topology.SinkConsumer("chabok"): e.Topo.EventsStreams()})
	srv := httptest.NewServer(m.Admin(e.NC, new(atomic.Bool)))
	defer srv.Close()
	oldest := `chapar_consumer_oldest_pending_seconds{consumer="sink-chabok",sink="chabok",stream="CHAPAR_EVENTS"}`

	other, err := envelope.New("com.shop.order.shipped", "test", map[string]any{})
	if err != nil {
		t.Fatal(err)
	}
	e.Publish(other) // not the sink's: never delivered to it
	// Setup, not a wait for a condition: the two events' ages must differ
	// by more than a scrape takes, to tell which one is measured.
	time.Sleep(300 * time.Millisecond)
	track := e.Publish(testenv.Track(t, "order_paid", "u1"))
	st, err := e.JS.Stream(ctx, e.Topo.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetMsg(ctx, track.Sequence)
	if err != nil {
		t.Fatal(err)
	}
	before := time.Since(msg.Time)
	_, body := get(t, srv.URL+"/metrics")
	if v, after := value(t, body, oldest), time.Since(msg.Time); v < before.Seconds() || v > after.Seconds() {
		t.Errorf("oldest %vs, want the track event's age, %v to %v", v, before, after)
	}
}
