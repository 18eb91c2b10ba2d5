package dispatch_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// eventsStreamsState is each events stream's retention and what it holds.
func eventsStreamsState(t *testing.T, e *testenv.Env) (retention map[string]jetstream.RetentionPolicy, msgs uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	retention = map[string]jetstream.RetentionPolicy{}
	for _, name := range e.Topo.EventsStreams() {
		st, err := e.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info := st.CachedInfo()
		retention[name] = info.Config.Retention
		msgs += info.State.Msgs
	}
	return retention, msgs
}

// An event every sink has acked stays in the events stream (limits
// retention, for streams.max_age) and can be read again from it: a skip
// made by mistake, a consumer deleted or recreated, loses nothing
// JetStream acknowledged to the producer. With interest retention (before
// v3) the last ack deleted it: this test found 0 of 10 left.
func TestAckedEventsStayInTheStream(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	sinks := []config.Sink{e.Sink("chabok", emulator.Chabok, nil, nil), e.Sink("hook", emulator.Webhook, nil, nil)}
	d := e.Start(sinks, []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"chabok"}}})
	const n = 10
	for i := range n {
		e.Publish(testenv.Track(t, "order_paid", fmt.Sprint("u", i)))
	}
	testenv.Eventually(t, 10*time.Second, "10 deliveries", func() bool { return d.Tally.DeliveredTo("chabok") == n })
	// hook skipped every event (not routed to it), chabok acked them.
	testenv.Eventually(t, 5*time.Second, "both sinks idle", func() bool { return e.Idle("chabok", "hook") })
	if _, msgs := eventsStreamsState(t, e); msgs != n {
		t.Fatalf("the events stream holds %d events after every sink acked, want %d (kept for max_age)", msgs, n)
	}
	// Kept means redeliverable: a consumer made now from the start reads
	// all of them.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.JS.CreateConsumer(ctx, e.Topo.EventsStream(), jetstream.ConsumerConfig{AckPolicy: jetstream.AckNonePolicy, DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for range batch.Messages() {
		got++
	}
	if got != n {
		t.Errorf("read %d events again from the stream, want %d", got, n)
	}
}

// A deployment made before v3 has interest-retained events streams. A
// dispatcher of this version starting while an old one runs (a rolling
// deploy) updates them in place to limits retention (nats-server allows
// interest ↔ limits, not to or from work queue), and no event pending or
// in flight at that moment is lost or delivered twice: the old
// dispatcher's in-flight deliveries are acked into the updated stream, the
// pending ones delivered after it. Before this version, Ensure kept
// interest retention, and the stream emptied as the sinks acked.
func TestEnsureMigratesInterestToLimitsWithoutLoss(t *testing.T) {
	for _, partitions := range []int{1, 2} {
		t.Run(fmt.Sprint(partitions, " partitions"), func(t *testing.T) {
			e := testenv.NewPartitioned(t, partitions)
			// The old layout: what Ensure made before v3.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for _, name := range e.Topo.EventsStreams() {
				st, err := e.JS.Stream(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				cfg := st.CachedInfo().Config
				cfg.Retention = jetstream.InterestPolicy
				if _, err := e.JS.UpdateStream(ctx, cfg); err != nil {
					t.Fatal(err)
				}
			}
			// The old dispatcher: a fast sink and a slow one (100 ms a
			// request, 2 at a time), so the update meets the slow sink's
			// events both in flight and not yet delivered.
			slow := e.Sink("hook", emulator.Webhook, nil, nil)
			slow.Concurrency = 2
			sinks := []config.Sink{e.Sink("chabok", emulator.Chabok, nil, nil), slow}
			routes := []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"chabok", "hook"}}}
			hook := e.Emu.Vendor(emulator.Webhook)
			hook.SetFault(emulator.Fault{Status: 200, Latency: 100 * time.Millisecond})
			old := e.Start(sinks, routes)
			const n = 40
			for i := range n {
				e.Publish(partitionedTrack(t, i%7, i))
			}
			testenv.Eventually(t, 10*time.Second, "the fast sink done, the slow one under way", func() bool {
				h := old.Tally.DeliveredTo("hook")
				return old.Tally.DeliveredTo("chabok") == n && h > 0 && h < n/2
			})

			// The rollout: a new dispatcher starts, and its Ensure updates
			// the streams while the old one delivers.
			next := e.Start(sinks, routes)
			retention, msgs := eventsStreamsState(t, e)
			for name, r := range retention {
				if r != jetstream.LimitsPolicy {
					t.Errorf("%s has %s retention after a new dispatcher started, want limits", name, r)
				}
			}
			// Until the update, interest retention deleted each event the
			// slow sink acked (the fast one acked all). The vendor records a
			// request before its answer, so before the ack: read after the
			// streams, its count bounds what had left them.
			if acked := hook.Count(200); msgs < uint64(n-acked) {
				t.Errorf("the streams hold %d events after the update, but the slow sink had %d left to deliver", msgs, n-acked)
			}

			hook.ClearFault()
			testenv.Eventually(t, 20*time.Second, "every event delivered to the slow sink", func() bool {
				return old.Tally.DeliveredTo("hook")+next.Tally.DeliveredTo("hook") >= n
			})
			testenv.Eventually(t, 10*time.Second, "both sinks idle", func() bool { return e.Idle("chabok", "hook") })
			ids := map[string]int{}
			for _, id := range webhookIDs(t, e) {
				ids[id]++
			}
			if len(ids) != n {
				t.Errorf("the slow sink got %d distinct events, want %d", len(ids), n)
			}
			for id, times := range ids {
				if times > 1 {
					t.Errorf("event %s delivered %d times: nothing crashed, so nothing may be sent twice", id, times)
				}
			}
			// From the update on, acks remove nothing.
			if _, after := eventsStreamsState(t, e); after != msgs {
				t.Errorf("the streams hold %d events once every sink acked, want the %d they held at the update (limits retention)", after, msgs)
			}
		})
	}
}
