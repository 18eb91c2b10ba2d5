package topology

// Review of dd0558c (the bind records its new lead's sweep before the
// widening with the stream's end read while the consumer is held, then
// lowers it to PassedTo): the pause's semantics, PassedTo under
// publishes and deletes, RestoreLead on another's hold, and what a
// resuming bind reads from the record.

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// waitFor polls cond until it holds, failing the test at the deadline.
func waitFor(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", within, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func consumerInfo(ctx context.Context, t *testing.T, js jetstream.JetStream, stream, sink string) *jetstream.ConsumerInfo {
	t.Helper()
	c, err := js.Consumer(ctx, stream, SinkConsumer(sink))
	if err != nil {
		t.Fatal(err)
	}
	return c.CachedInfo()
}

// Suspicion 1: a pull already waiting on the narrow consumer when the
// hold lands, and pulls issued all through the hold (a replica's
// Consume keeps asking), move it no further: nothing is delivered, the
// held read is at or above where it stands, and once widened PassedTo
// is exactly the stray its pulls had scanned past; the first event the
// widened consumer delivers is the first one stored during the hold.
func TestReviewRev10AHeldConsumerStaysPutUnderWaitingPulls(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	stream := topo.EventsStream()
	c, stray := narrowPastAStray(ctx, t, js, topo)

	// A replica's continuous pull: it keeps a request waiting (nothing on
	// its filter yet) before the hold and re-issues them during it.
	var delivered atomic.Int64
	cc, err := c.Consume(func(m jetstream.Msg) {
		delivered.Add(1)
		_ = m.Nak()
	}, jetstream.PullMaxMessages(10), jetstream.PullExpiry(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Stop()
	waitFor(t, 5*time.Second, "a pull waiting on the narrow consumer", func() bool {
		info, err := c.Info(ctx)
		return err == nil && info.NumWaiting > 0
	})

	prior, err := topo.PriorReads(ctx, js, "gw")
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.HoldForWidening(ctx, js, "gw", prior, time.Now().Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Stored during the hold: events on its filter (which the waiting
	// pull would be handed if the consumer moved) and off it (which it
	// would scan past).
	var during []uint64
	for i := range 6 {
		typ := "com.shop.order.paid"
		if i%2 == 1 {
			typ = "com.shop.order.shipped"
		}
		during = append(during, publishOn(ctx, t, js, topo, typ))
	}
	// The observation window (nothing must happen in it): three of the
	// pull's expiries, each re-issued request waiting on a paused
	// consumer.
	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		if n := delivered.Load(); n > 0 {
			t.Fatalf("held, the consumer delivered %d events", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if info := consumerInfo(ctx, t, js, stream, "gw"); info.NumPending != 3 || info.Delivered.Stream != 0 {
		t.Errorf("held: pending %d, delivered %d; want the three paid events stored during the hold pending, nothing delivered",
			info.NumPending, info.Delivered.Stream)
	}
	held, err := topo.HeldPriorReads(ctx, js, "gw")
	if err != nil {
		t.Fatal(err)
	}
	if held[0].Delivered < during[len(during)-1] {
		t.Errorf("the held read %d is below the stream's end %d", held[0].Delivered, during[len(during)-1])
	}
	if _, err := topo.EnsureSink(ctx, js, "gw", ConsumerSettings{AckWait: 30 * time.Second, MaxAckPending: 100, Fence: "f", Lead: true}); err != nil {
		t.Fatal(err)
	}
	at, err := PassedTo(ctx, js, stream, SinkConsumer("gw"))
	if err != nil {
		t.Fatal(err)
	}
	if at != stray {
		t.Errorf("widened and held: PassedTo %d, want %d (the stray its pulls scanned past)", at, stray)
	}
	if n := delivered.Load(); n > 0 {
		t.Fatalf("held and widened, the consumer delivered %d events", n)
	}
	cc.Stop()
	<-cc.Closed()
	if _, err := js.ResumeConsumer(ctx, stream, SinkConsumer("gw")); err != nil {
		t.Fatal(err)
	}
	if got := firstDelivered(t, c); got != during[0] {
		t.Errorf("the widened consumer delivered %d first; want %d, the first event stored during the hold", got, during[0])
	}
}

// Suspicion 2: publishes (on and off the former filter) and deletes of
// interior events above the position keep arriving while PassedTo reads,
// so its two reads of the stream rarely agree. Every answer must be at
// or above where the held consumer stands (the stray): below it, a sweep
// takes what it passed over for delivered (loss). (One CI run read one
// below: a delete listed in the stream but not yet off the consumer's
// count; TestPassedToWaitsForADeleteToReachTheConsumersCount replays it.)
func TestReviewRev10PassedToUnderPublishesAndDeletesIsNeverBelowThePosition(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	stream := topo.EventsStream()
	c, stray := narrowPastAStray(ctx, t, js, topo)
	if _, err := js.PauseConsumer(ctx, stream, SinkConsumer("gw"), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	// Widened as a bind widens it: to the partition's subjects.
	if _, err := topo.EnsureSink(ctx, js, "gw", ConsumerSettings{AckWait: 30 * time.Second, MaxAckPending: 100, Fence: "f", Lead: true}); err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	// Writers on their own connection, as producers are.
	nc2, err := nats.Connect(js.Conn().ConnectedUrl())
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
	js2, err := jetstream.New(nc2)
	if err != nil {
		t.Fatal(err)
	}
	wctx, stop := context.WithCancel(ctx)
	var writers sync.WaitGroup
	for w := range 2 {
		writers.Go(func() {
			for i := 0; wctx.Err() == nil; i++ {
				typ := "com.shop.order.paid"
				if (i+w)%2 == 1 {
					typ = "com.shop.order.shipped"
				}
				ack, err := js2.Publish(wctx, topo.EventSubjectFor(typ, "u1"), []byte("{}"))
				if err != nil {
					continue
				}
				if i%3 == 2 && ack.Sequence > stray+1 {
					// An interior delete above the position (never the
					// stream's last: the one before it).
					_ = s.DeleteMsg(wctx, ack.Sequence-1)
				}
			}
		})
	}
	var below, exact, reads int
	var highest uint64
	began := time.Now()
	for range 30 {
		at, err := PassedTo(ctx, js, stream, SinkConsumer("gw"))
		if err != nil {
			t.Fatalf("after %d reads in %s: %v", reads, time.Since(began), err)
		}
		reads++
		switch {
		case at < stray:
			below++
		case at == stray:
			exact++
		}
		highest = max(highest, at)
	}
	stop()
	writers.Wait()
	if below > 0 {
		t.Errorf("%d of %d PassedTo reads under publishes and deletes were below the held position %d (loss)", below, reads, stray)
	}
	t.Logf("%d reads in %s: %d exact, highest %d over the position %d (an upper bound: events above it judged passed over)", reads, time.Since(began), exact, highest-stray, stray)
	at, err := PassedTo(ctx, js, stream, SinkConsumer("gw"))
	if err != nil {
		t.Fatal(err)
	}
	if at != stray {
		si, _ := s.Info(ctx, jetstream.WithDeletedDetails(true))
		ci, _ := c.Info(ctx)
		t.Errorf("quiet again: PassedTo %d, want %d (stream first %d last %d msgs %d deleted %d (listed %d); consumer pending %d, delivered %d)",
			at, stray, si.State.FirstSeq, si.State.LastSeq, si.State.Msgs, si.State.NumDeleted, len(si.State.Deleted), ci.NumPending, ci.Delivered.Stream)
	}
}

// hookJS runs beforeUpdate once, just before the first consumer update
// it forwards, and fails every Stream lookup once failStream is set.
type hookJS struct {
	jetstream.JetStream
	beforeUpdate func()
	failStream   atomic.Bool
	updated      atomic.Bool
}

func (h *hookJS) UpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if f := h.beforeUpdate; f != nil {
		h.beforeUpdate = nil
		f()
	}
	c, err := h.JetStream.UpdateConsumer(ctx, stream, cfg)
	if err == nil {
		h.updated.Store(true)
	}
	return c, err
}

func (h *hookJS) Stream(ctx context.Context, stream string) (jetstream.Stream, error) {
	if h.failStream.Load() && h.updated.Load() {
		return nil, errors.New("review: the stream does not answer")
	}
	return h.JetStream.Stream(ctx, stream)
}

// Suspicion 3: RestoreLead finds the consumer paused by someone else (an
// operator, or a bind's hold) and does not hold it itself; that pause
// ends between RestoreLead's read and its widening, and a narrow pull
// scans past a stray stored meanwhile. Read once widened, PassedTo
// covers it (green). If PassedTo cannot read, the bound RestoreLead
// read before the widening "stands": it was read while another's pause,
// not RestoreLead's, held the consumer, and the stray is above it,
// neither delivered by the widened consumer nor judged passed over.
func TestReviewRev10RestoreLeadOnAnothersHoldEndedMidway(t *testing.T) {
	for _, tt := range []struct {
		name         string
		passedToFail bool
	}{{"PassedTo reads", false}, {"PassedTo cannot read", true}} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.passedToFail {
				t.Skip("KNOWN LIMIT (docs/design.md, \"Removing the lead\"): RestoreLead on a consumer another holds, that holder resuming it " +
					"between RestoreLead's read and its widening, and the stream unreadable right after the widening (PassedTo tried for " +
					"about 1.5 s): the bound read under the other's hold is low, and a stray passed over meanwhile is judged by no one")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			js, topo := ensuredJetStream(ctx, t)
			stream := topo.EventsStream()
			c, _ := narrowPastAStray(ctx, t, js, topo)
			// Another's pause: RestoreLead leaves it to them.
			if _, err := js.PauseConsumer(ctx, stream, SinkConsumer("gw"), time.Now().Add(time.Minute)); err != nil {
				t.Fatal(err)
			}
			var stray2 uint64
			h := &hookJS{JetStream: js}
			h.failStream.Store(tt.passedToFail)
			h.beforeUpdate = func() {
				// They resume it; a replica's narrow pull scans past a
				// stray stored now.
				if _, err := js.ResumeConsumer(ctx, stream, SinkConsumer("gw")); err != nil {
					t.Error(err)
					return
				}
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
			publishOn(ctx, t, js, topo, "com.shop.order.shipped")
			got := firstDelivered(t, c)
			passedOver := got > stray2
			switch {
			case passedOver && prior.Delivered < stray2:
				t.Errorf("the stray at %d was passed over (the widened consumer delivered %d first) and RestoreLead reports %d: "+
					"the healer's sweep takes it for delivered; neither delivered nor dead-lettered", stray2, got, prior.Delivered)
			case !passedOver && prior.Delivered >= stray2:
				t.Errorf("the stray at %d is delivered by the widened consumer and reported passed over (%d): dead-lettered as well", stray2, prior.Delivered)
			}
		})
	}
}

// Suspicion 4: between the bind's widening and its rewrite of the
// record, the record holds the stream's end at the hold. Another replica
// of the new config binding then (it finds the sink marked, the sweep
// recorded, and resumes it: leadsAtBind) reads that bound, not where the
// consumer goes on from: an event stored during the hold, off the
// former filter, is at or below it, and the widened consumer delivers
// it. The resumed sweep dead-letters it for the sink as well (a second
// outcome, with the first bind still running, not stopped).
func TestReviewRev10AResumingBindReadsTheHoldsBoundNotThePosition(t *testing.T) {
	t.Skip("ACCEPTED (docs/design.md, \"Removing the lead\"): a bind resuming a new lead's sweep while the bind that made it the lead " +
		"is between its widening and its record's rewrite judges by the hold's bound: an event stored during the hold, off the former " +
		"filter and routed to the sink, is dead-lettered (replayable) as well as delivered; never neither")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	stream := topo.EventsStream()
	kv, err := topo.EnsureFloors(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	c, stray := narrowPastAStray(ctx, t, js, topo)
	prior, err := topo.PriorReads(ctx, js, "gw")
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.HoldForWidening(ctx, js, "gw", prior, time.Now().Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Stored while it is held, off its former filter: not passed over.
	held := publishOn(ctx, t, js, topo, "com.shop.order.shipped")
	if prior, err = topo.HeldPriorReads(ctx, js, "gw"); err != nil {
		t.Fatal(err)
	}
	if err := topo.WriteSweep(ctx, kv, "gw", 0, PendingSweep{From: 1, Prior: prior[0]}); err != nil {
		t.Fatal(err)
	}
	if _, err := topo.EnsureSink(ctx, js, "gw", ConsumerSettings{AckWait: 30 * time.Second, MaxAckPending: 100, Fence: "f", Lead: true}); err != nil {
		t.Fatal(err)
	}
	// The other replica's bind: marked, and a pending sweep.
	pending, err := topo.PendingSweeps(ctx, kv, "gw")
	if err != nil {
		t.Fatal(err)
	}
	resumed := pending[0].Prior
	// The first bind goes on: PassedTo, the record lowered, released.
	at, err := PassedTo(ctx, js, stream, SinkConsumer("gw"))
	if err != nil {
		t.Fatal(err)
	}
	if at != stray {
		t.Fatalf("PassedTo %d, want %d", at, stray)
	}
	if _, err := js.ResumeConsumer(ctx, stream, SinkConsumer("gw")); err != nil {
		t.Fatal(err)
	}
	if got := firstDelivered(t, c); got != held {
		t.Fatalf("the widened consumer delivered %d first, want %d", got, held)
	}
	if resumed.Delivered >= held && !Reads(resumed.Filters, topo.EventSubjectFor("com.shop.order.shipped", "u1")) {
		t.Errorf("a bind resuming the sweep meanwhile reads %d (the hold's bound; the consumer goes on from %d): the event at %d, "+
			"off the former filter, is judged passed over and dead-lettered, and the widened consumer delivers it", resumed.Delivered, at+1, held)
	}
}

// Found in review (5): RestoreLead widens by clearing the filter
// (FilterSubject and FilterSubjects empty), where a bind sets the
// partition's subjects. nats-server (v2.15.2, consumer.updateConfig)
// then hands swapSigSubs an empty, non-nil list of subjects, which
// registers the consumer for no stream signal at all: what is stored
// from then on is not counted in its NumPending (processStreamSignal is
// what counts it) and does not wake a pull waiting on it. PassedTo,
// read on such a consumer with events stored since the widening, is
// their number too high, and the healer's sweep dead-letters events the
// consumer delivers; and the consumer's NumPending stays short (zero)
// while it has a backlog. (From the server's code, not checked here: a
// pull waiting on it is not woken by a new event, only by the next pull
// request.)
func TestReviewRev10RestoreLeadsWideningCountsWhatIsStoredAfterIt(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	stream := topo.EventsStream()
	c, stray := narrowPastAStray(ctx, t, js, topo)
	// Held by another (a bind), so that it stays put after RestoreLead.
	if _, err := js.PauseConsumer(ctx, stream, SinkConsumer("gw"), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := RestoreLead(ctx, js, stream, SinkConsumer("gw"), time.Now().Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	var after []uint64
	for i := range 5 {
		typ := "com.shop.order.paid"
		if i%2 == 1 {
			typ = "com.shop.order.shipped"
		}
		after = append(after, publishOn(ctx, t, js, topo, typ))
	}
	info := consumerInfo(ctx, t, js, stream, "gw")
	if info.NumPending != uint64(len(after)) {
		t.Errorf("widened by RestoreLead, held at %d with %d events stored after it: NumPending %d", stray, len(after), info.NumPending)
	}
	at, err := PassedTo(ctx, js, stream, SinkConsumer("gw"))
	if err != nil {
		t.Fatal(err)
	}
	if at != stray {
		t.Errorf("PassedTo %d, want %d: the events at %v, which the consumer delivers, are judged passed over", at, stray, after)
	}
	if _, err := js.ResumeConsumer(ctx, stream, SinkConsumer("gw")); err != nil {
		t.Fatal(err)
	}
	if got := firstDelivered(t, c); got != after[0] {
		t.Errorf("the widened consumer delivered %d first, want %d", got, after[0])
	}
}
