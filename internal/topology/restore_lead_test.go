package topology

import (
	"context"
	"slices"
	"sync/atomic"
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
			// Every subject, as a bind's lead reads it: its stream's.
			if f := FiltersOf(info.Config); !IsLead(info) || len(f) != 1 || f[0] != topo.PartitionSubjects(0) || info.Config.Metadata[FenceMetadata] != "f" {
				t.Errorf("after RestoreLead: lead %v, filters %v, fence %q; want marked, %s, fence kept",
					IsLead(info), f, info.Config.Metadata[FenceMetadata], topo.PartitionSubjects(0))
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
	c, stray := narrowPastAStray(ctx, t, js, topo)
	_, prior, err := RestoreLead(ctx, js, stream, SinkConsumer("gw"), time.Now().Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if prior.Delivered < stray {
		t.Errorf("reported as where it stood: %d; the pull had passed the stray at %d, which the widened consumer does not deliver", prior.Delivered, stray)
	}
	// And no higher: the next event is the first the widened consumer
	// delivers, and is not reported passed over.
	next := publishOn(ctx, t, js, topo, "com.shop.order.shipped")
	if got := firstDelivered(t, c); got != next {
		t.Errorf("the widened consumer delivered %d first; want %d, the event after the stray", got, next)
	}
	if prior.Delivered >= next {
		t.Errorf("reported as where it stood: %d, at or above %d, which the widened consumer delivers", prior.Delivered, next)
	}
}

// The same for a bind making the sink the lead: HoldForWidening, then
// HeldPriorReads, recorded before EnsureSink widens the consumer, then
// PassedTo once it is widened and still held. Both cover the stray its
// pulls passed over (a bind stopped between the widening and the record
// rewritten with PassedTo leaves the first: red before, it said 0), and
// PassedTo is exactly where the widened consumer goes on from.
func TestABindsWideningReportsWhatThePullsPassedOverUndelivered(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	stream := topo.EventsStream()
	c, stray := narrowPastAStray(ctx, t, js, topo)
	prior, err := topo.PriorReads(ctx, js, "gw")
	if err != nil {
		t.Fatal(err)
	}
	if err := topo.HoldForWidening(ctx, js, "gw", prior, time.Now().Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	// Stored while it is held: not passed over, delivered once widened.
	held := publishOn(ctx, t, js, topo, "com.shop.order.shipped")
	if prior, err = topo.HeldPriorReads(ctx, js, "gw"); err != nil {
		t.Fatal(err)
	}
	if prior[0].Delivered < stray {
		t.Errorf("the held read, recorded before the widening: %d; the pull had passed the stray at %d", prior[0].Delivered, stray)
	}
	settings := ConsumerSettings{AckWait: 30 * time.Second, MaxAckPending: 100, Fence: "f", Lead: true}
	if _, err := topo.EnsureSink(ctx, js, "gw", settings); err != nil {
		t.Fatal(err)
	}
	at, err := PassedTo(ctx, js, stream, SinkConsumer("gw"))
	if err != nil {
		t.Fatal(err)
	}
	if at != stray {
		t.Errorf("widened and held, PassedTo says it passed %d; it passed the stray at %d and no further (%d was stored while it was held)", at, stray, held)
	}
	if _, err := js.ResumeConsumer(ctx, stream, SinkConsumer("gw")); err != nil {
		t.Fatal(err)
	}
	if got := firstDelivered(t, c); got != held {
		t.Errorf("the widened consumer delivered %d first; want %d, stored while it was held", got, held)
	}
}

// Interior deletes above a consumer's position hold nothing it has
// pending: PassedTo counts them, and is still where it goes on from, not
// above it (the stream's last sequence less what is pending would claim
// the event after the position passed over, and a sweep would
// dead-letter what the consumer delivers).
func TestPassedToCountsTheStreamsInteriorDeletes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	stream := topo.EventsStream()
	c, stray, after := heldPastAStray(ctx, t, js, topo, 4)
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{after[1], after[2]} {
		if err := s.DeleteMsg(ctx, seq); err != nil {
			t.Fatal(err)
		}
	}
	cfg := c.CachedInfo().Config
	cfg.FilterSubject, cfg.FilterSubjects = "", nil
	if _, err := js.UpdateConsumer(ctx, stream, cfg); err != nil {
		t.Fatal(err)
	}
	at, err := PassedTo(ctx, js, stream, SinkConsumer("gw"))
	if err != nil {
		t.Fatal(err)
	}
	if at != stray {
		t.Errorf("PassedTo: %d, want %d (the stray; %d and %d above it deleted, %d and %d pending)", at, stray, after[1], after[2], after[0], after[3])
	}
	if _, err := js.ResumeConsumer(ctx, stream, SinkConsumer("gw")); err != nil {
		t.Fatal(err)
	}
	if got := firstDelivered(t, c); got != after[0] {
		t.Errorf("the widened consumer delivered %d first; want %d", got, after[0])
	}
}

// A read PassedTo cannot make is an error, not a guess: its callers keep
// the bound they read before the widening.
func TestPassedToReportsAReadItCannotMake(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	if _, err := PassedTo(ctx, js, topo.EventsStream(), SinkConsumer("none")); err == nil {
		t.Error("PassedTo of a consumer that does not exist: no error")
	}
	if _, err := PassedTo(ctx, js, "NO_SUCH_STREAM", SinkConsumer("none")); err == nil {
		t.Error("PassedTo on a stream that does not exist: no error")
	}
}

func TestPositionOf(t *testing.T) {
	for _, tt := range []struct {
		name          string
		last, pending uint64
		deleted       []uint64
		want          uint64
	}{
		{"nothing pending", 10, 0, nil, 10},
		{"all pending", 10, 10, nil, 0},
		{"some pending", 10, 3, nil, 7},
		{"deletes below the position count for nothing", 10, 3, []uint64{2, 5}, 7},
		{"a delete among the pending", 10, 3, []uint64{9}, 6},
		{"deletes among the pending, unsorted", 10, 3, []uint64{9, 7}, 5},
		{"deletes just below the one pending: the highest it could be", 10, 1, []uint64{8, 9}, 9},
		{"deletes on both sides of the position", 10, 3, []uint64{4, 8}, 6},
		{"the last event deleted: the highest position it could be", 10, 0, []uint64{10}, 10},
		{"deletes above last are not the stream's", 10, 3, []uint64{11, 12}, 7},
		{"more pending than stored: none passed", 5, 9, nil, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := positionOf(tt.last, tt.pending, tt.deleted); got != tt.want {
				t.Errorf("positionOf(%d, %d, %v) = %d, want %d", tt.last, tt.pending, tt.deleted, got, tt.want)
			}
		})
	}
}

// narrowPastAStray makes gw's consumer read only one type and has a pull
// scan past an event of another (the stray), delivering nothing: its
// position is at the stray, its Delivered below it.
func narrowPastAStray(ctx context.Context, t *testing.T, js jetstream.JetStream, topo Topology) (jetstream.Consumer, uint64) {
	t.Helper()
	narrow := EventFilter{ByType: true, Types: []string{"com.shop.order.paid"}}
	if _, err := topo.EnsureSink(ctx, js, "gw", ConsumerSettings{AckWait: 30 * time.Second, MaxAckPending: 100, Fence: "f", Filter: narrow}); err != nil {
		t.Fatal(err)
	}
	stray := publishOn(ctx, t, js, topo, "com.shop.order.shipped")
	c, err := js.Consumer(ctx, topo.EventsStream(), SinkConsumer("gw"))
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
	return c, stray
}

// heldPastAStray is narrowPastAStray, the consumer then paused and n
// events off its filter published above the stray (their sequences).
func heldPastAStray(ctx context.Context, t *testing.T, js jetstream.JetStream, topo Topology, n int) (jetstream.Consumer, uint64, []uint64) {
	t.Helper()
	c, stray := narrowPastAStray(ctx, t, js, topo)
	if _, err := js.PauseConsumer(ctx, topo.EventsStream(), SinkConsumer("gw"), time.Now().Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	var after []uint64
	for range n {
		after = append(after, publishOn(ctx, t, js, topo, "com.shop.order.shipped"))
	}
	return c, stray, after
}

func publishOn(ctx context.Context, t *testing.T, js jetstream.JetStream, topo Topology, typ string) uint64 {
	t.Helper()
	ack, err := js.Publish(ctx, topo.EventSubjectFor(typ, "u1"), []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// firstDelivered is the stream sequence of the first event c delivers.
func firstDelivered(t *testing.T, c jetstream.Consumer) uint64 {
	t.Helper()
	batch, err := c.Fetch(1, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	for m := range batch.Messages() {
		meta, err := m.Metadata()
		if err != nil {
			t.Fatal(err)
		}
		return meta.Sequence.Stream
	}
	t.Fatalf("nothing delivered in 5 s: %v", batch.Error())
	return 0
}

func TestFiltersOn(t *testing.T) {
	stream := []string{"chapar.events.>"}
	for _, tt := range []struct {
		name    string
		cfg     jetstream.ConsumerConfig
		subject []string
		want    []string
	}{
		{"no filter", jetstream.ConsumerConfig{}, stream, nil},
		{"the stream's subject: every subject", jetstream.ConsumerConfig{FilterSubject: "chapar.events.>"}, stream, nil},
		{"the stream's subject among others", jetstream.ConsumerConfig{FilterSubjects: []string{"chapar.events.a.>", "chapar.events.>"}}, stream, nil},
		{"by type", jetstream.ConsumerConfig{FilterSubjects: []string{"chapar.events.a.>", "chapar.events.direct.>"}}, stream,
			[]string{"chapar.events.a.>", "chapar.events.direct.>"}},
		{"one of two stream subjects", jetstream.ConsumerConfig{FilterSubject: "a.>"}, []string{"a.>", "b.>"}, []string{"a.>"}},
		{"stream subjects unknown", jetstream.ConsumerConfig{FilterSubject: "chapar.events.>"}, nil, []string{"chapar.events.>"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := filtersOn(tt.cfg, tt.subject); !slices.Equal(got, tt.want) {
				t.Errorf("filtersOn = %v, want %v", got, tt.want)
			}
		})
	}
}

// A sink's consumer filtered on its stream's subjects (a lead's, as a
// bind sets it, or a sink whose routes name no types) reads every
// subject: made the lead, it is neither held nor swept (a sweep would
// read the old lead's whole backlog to judge nothing), and RestoreLead
// marks it without a hold or a prior read.
func TestAConsumerOnItsStreamsSubjectsReadsEverything(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	stream := topo.EventsStream()
	if _, err := topo.EnsureSink(ctx, js, "gw", ConsumerSettings{AckWait: 30 * time.Second, MaxAckPending: 100, Fence: "f"}); err != nil {
		t.Fatal(err)
	}
	info := consumerInfo(ctx, t, js, stream, "gw")
	if f := FiltersOf(info.Config); !slices.Equal(f, []string{topo.PartitionSubjects(0)}) {
		t.Fatalf("the consumer's filter: %v, want its stream's subjects", f)
	}
	prior, err := topo.PriorReads(ctx, js, "gw")
	if err != nil {
		t.Fatal(err)
	}
	if !prior[0].ReadsEverything() {
		t.Errorf("PriorReads: %+v, want it read every subject", prior[0])
	}
	if err := topo.HoldForWidening(ctx, js, "gw", prior, time.Now().Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if consumerInfo(ctx, t, js, stream, "gw").Paused {
		t.Error("held for a widening it does not need")
	}
	_, restored, err := RestoreLead(ctx, js, stream, SinkConsumer("gw"), time.Now().Add(30*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if restored.Exists {
		t.Errorf("RestoreLead reported a prior read %+v: its sweep would read the stream to judge nothing", restored)
	}
	if info := consumerInfo(ctx, t, js, stream, "gw"); !IsLead(info) || info.Paused {
		t.Errorf("after RestoreLead: lead %v, paused %v; want marked, not held", IsLead(info), info.Paused)
	}
}

// nats-server records a delete in the stream (its deleted list) before it
// takes the event off a consumer's pending count: a consumer read in
// between counts as pending an event the stream already lists as deleted.
// Replayed here with the consumer's read from just before a real delete:
// PassedTo must not answer one below the position (the stray), which
// would have a sweep take the stray for delivered (red before: the
// reading with the stale count was returned, one below).
func TestPassedToWaitsForADeleteToReachTheConsumersCount(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	stream := topo.EventsStream()
	c, stray, after := heldPastAStray(ctx, t, js, topo, 3)
	cfg := c.CachedInfo().Config
	cfg.FilterSubject, cfg.FilterSubjects = topo.EventsSubjects(), nil
	if _, err := js.UpdateConsumer(ctx, stream, cfg); err != nil {
		t.Fatal(err)
	}
	stale, err := c.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMsg(ctx, after[1]); err != nil {
		t.Fatal(err)
	}
	lagging := &staleCountJS{JetStream: js, stale: stale}
	at, err := PassedTo(ctx, lagging, stream, SinkConsumer("gw"))
	if err != nil {
		t.Fatal(err)
	}
	if !lagging.served.Load() {
		t.Fatal("the consumer's read from before the delete was never served: the test replayed nothing")
	}
	if at < stray {
		t.Errorf("PassedTo %d, below the position %d: a consumer read counting the deleted %d as pending was taken", at, stray, after[1])
	}
	if at != stray {
		t.Errorf("PassedTo %d, want %d (the stray; %d deleted above it, %d and %d pending)", at, stray, after[1], after[0], after[2])
	}
}

// staleCountJS serves one consumer read taken earlier, before a delete the
// server had not yet taken off the consumer's pending count.
type staleCountJS struct {
	jetstream.JetStream
	stale  *jetstream.ConsumerInfo
	served atomic.Bool
}

func (j *staleCountJS) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	c, err := j.JetStream.Consumer(ctx, stream, name)
	if err != nil {
		return nil, err
	}
	return staleCountConsumer{Consumer: c, js: j}, nil
}

type staleCountConsumer struct {
	jetstream.Consumer
	js *staleCountJS
}

func (c staleCountConsumer) Info(ctx context.Context) (*jetstream.ConsumerInfo, error) {
	if c.js.served.CompareAndSwap(false, true) {
		return c.js.stale, nil
	}
	return c.Consumer.Info(ctx)
}
