package topology

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// RestoreLead widens a narrow consumer held still, says where (prior, for
// the caller's sweep), and leaves it running: resumed if it held it, still
// paused if another's hold (a bind making the lead) had paused it, which
// that bind resumes. A consumer marked already is not touched.
func TestRestoreLeadHoldsWidensAndReportsWhereItStood(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	narrow := EventFilter{ByType: true, Types: []string{"track"}}
	stream := topo.EventsStream()
	for _, tt := range []struct {
		name        string
		pausedFirst bool
	}{{"not paused", false}, {"paused by a bind's hold", true}} {
		t.Run(tt.name, func(t *testing.T) {
			sink := "gw"
			if tt.pausedFirst {
				sink = "gw2"
			}
			if _, err := topo.EnsureSink(ctx, js, sink, ConsumerSettings{AckWait: 30 * time.Second, MaxAckPending: 100, Fence: "f", Filter: narrow}); err != nil {
				t.Fatal(err)
			}
			c, err := js.Consumer(ctx, stream, SinkConsumer(sink))
			if err != nil {
				t.Fatal(err)
			}
			filters := FiltersOf(c.CachedInfo().Config)
			if tt.pausedFirst {
				if _, err := js.PauseConsumer(ctx, stream, SinkConsumer(sink), time.Now().Add(time.Minute)); err != nil {
					t.Fatal(err)
				}
			}
			_, prior, err := RestoreLead(ctx, js, stream, SinkConsumer(sink), time.Now().Add(30*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			if !prior.Exists || len(prior.Filters) != len(filters) {
				t.Errorf("prior %+v, want the narrow filters %v", prior, filters)
			}
			c, err = js.Consumer(ctx, stream, SinkConsumer(sink))
			if err != nil {
				t.Fatal(err)
			}
			info := c.CachedInfo()
			if !IsLead(info) || len(FiltersOf(info.Config)) != 0 || info.Config.Metadata[FenceMetadata] != "f" {
				t.Errorf("after RestoreLead: lead %v, filters %v, fence %q; want marked, every subject, fence kept",
					IsLead(info), FiltersOf(info.Config), info.Config.Metadata[FenceMetadata])
			}
			if info.Paused != tt.pausedFirst {
				t.Errorf("after RestoreLead: paused %v, want %v", info.Paused, tt.pausedFirst)
			}
			if _, again, err := RestoreLead(ctx, js, stream, SinkConsumer(sink), time.Now().Add(30*time.Second)); err != nil || again.Exists {
				t.Errorf("RestoreLead on a marked consumer: prior %+v, %v; want none", again, err)
			}
		})
	}
}

// A narrow consumer's position is past what its pulls scanned and its
// filter did not take, though it delivered none of it: Delivered says 0
// where the server will go on from 2. Widened there, it never delivers
// the event it passed over, so what RestoreLead reports as where it
// stood must cover it, for the caller's sweep to judge it (red before:
// reported 0, and a CI run lost a stray so:
// TestReviewRestoredLeadJudgesWhatItsNarrowRecreationPassedOver).
func TestRestoreLeadReportsWhatThePullsPassedOverUndelivered(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	stream := topo.EventsStream()
	narrow := EventFilter{ByType: true, Types: []string{"com.shop.order.paid"}}
	if _, err := topo.EnsureSink(ctx, js, "gw", ConsumerSettings{AckWait: 30 * time.Second, MaxAckPending: 100, Fence: "f", Filter: narrow}); err != nil {
		t.Fatal(err)
	}
	stray, err := js.Publish(ctx, topo.EventSubjectFor("com.shop.order.shipped", "u1"), []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := js.Consumer(ctx, stream, SinkConsumer("gw"))
	if err != nil {
		t.Fatal(err)
	}
	// A pull that finds nothing on the filter: the server scans past the
	// stray.
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
		t.Fatal("the narrow consumer delivered the stray")
	}
	_, prior, err := RestoreLead(ctx, js, stream, SinkConsumer("gw"), time.Now().Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	// Widened, it goes on past the stray: the next event is the first it
	// delivers.
	next, err := js.Publish(ctx, topo.EventSubjectFor("com.shop.order.paid", "u1"), []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	batch, err = c.Fetch(1, jetstream.FetchMaxWait(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		meta, _ := m.Metadata()
		if meta.Sequence.Stream != next.Sequence {
			t.Logf("the widened consumer delivered %d first (the stray is %d): the server had not passed it", meta.Sequence.Stream, stray.Sequence)
		}
	}
	if prior.Delivered < stray.Sequence {
		t.Errorf("reported as where it stood: %d; the pull had passed the stray at %d, which the widened consumer does not deliver", prior.Delivered, stray.Sequence)
	}
}

// The same for a bind making the sink the lead (HoldForWidening, then
// PriorReads, then EnsureSink widening it): what the prior read says it
// delivered is below what its pulls passed over, and PassedTo, read once
// it is widened and still held, is not.
func TestABindsWideningReportsWhatThePullsPassedOverUndelivered(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	stream := topo.EventsStream()
	narrow := EventFilter{ByType: true, Types: []string{"com.shop.order.paid"}}
	settings := ConsumerSettings{AckWait: 30 * time.Second, MaxAckPending: 100, Fence: "f", Filter: narrow}
	if _, err := topo.EnsureSink(ctx, js, "gw", settings); err != nil {
		t.Fatal(err)
	}
	stray, err := js.Publish(ctx, topo.EventSubjectFor("com.shop.order.shipped", "u1"), []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	c, err := js.Consumer(ctx, stream, SinkConsumer("gw"))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(300*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	for range batch.Messages() {
		t.Fatal("the narrow consumer delivered the stray")
	}
	prior, err := topo.PriorReads(ctx, js, "gw")
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.HoldForWidening(ctx, js, "gw", prior, time.Now().Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if prior, err = topo.PriorReads(ctx, js, "gw"); err != nil {
		t.Fatal(err)
	}
	settings.Lead, settings.Filter = true, EventFilter{}
	if _, err := topo.EnsureSink(ctx, js, "gw", settings); err != nil {
		t.Fatal(err)
	}
	if prior[0].Delivered >= stray.Sequence {
		t.Logf("the prior read says %d already", prior[0].Delivered)
	}
	if got := PassedTo(ctx, js, stream, SinkConsumer("gw"), prior[0].Delivered); got < stray.Sequence {
		t.Errorf("widened and held, it goes on from %d; the pull had passed the stray at %d", got+1, stray.Sequence)
	}
}
