package dispatch_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Review of subject filters (issue 20). An event stored on a subject that
// is not its type's (a producer that writes chapar.track to
// <prefix>.events.chapar.track, not <prefix>.events.track, or puts every
// type on one subject) was delivered before filters: every consumer read
// the whole stream and routed by the envelope's type. With filters, the
// sink its type is routed to never reads that subject; the first sink,
// which does, checks every target's filter (checkDestinations), so the
// event is dead-lettered for it, not lost. Without filters it is
// delivered.
func TestEventOnASubjectNotItsTypesIsDeliveredOrDeadLettered(t *testing.T) {
	t.Parallel() // waits on replicas and the vendor, not on the CPU
	for _, byRoute := range []bool{false, true} {
		t.Run(fmt.Sprintf("filter_by_route=%v", byRoute), func(t *testing.T) {
			e := testenv.New(t)
			e.Streams.FilterByRoute = byRoute
			first := e.Sink("first", emulator.Chabok, nil, nil)
			gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
			d := e.Start([]config.Sink{first, gateway}, []config.Route{
				{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}},
				{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}},
			})
			var ids []string
			for i := range 6 {
				env := testenv.Track(t, "order_paid", fmt.Sprintf("u%d", i))
				raw, err := env.Marshal()
				if err != nil {
					t.Fatal(err)
				}
				subject := e.Streams.SubjectPrefix + ".events.chapar.track" // the type, not its subject
				if i%2 == 1 {
					subject = e.Topo.EventSubject("com.shop.order.shipped") // another type's subject
				}
				e.PublishRaw(subject, env.ID, raw)
				ids = append(ids, env.ID)
			}
			// A marker on the right subject: once it is delivered and both
			// consumers are idle, every event before it has been judged.
			marker := testenv.Track(t, "order_paid", "marker")
			e.Publish(marker)
			testenv.Eventually(t, 20*time.Second, "the marker delivered", allDelivered(t, e, []string{marker.ID}))
			testenv.Eventually(t, 20*time.Second, "settled", func() bool { return e.Idle("first", "gateway") })
			got := gatewayIDs(t, e)
			dead := map[string]int{}
			for _, r := range deadLetters(t, e, dlq.Filter{Sink: "gateway"}) {
				dead[r.EventID]++
			}
			lost := 0
			for _, id := range ids {
				if got[id]+dead[id] == 0 {
					lost++
				}
			}
			_, unrouted, _ := d.Tally.Snapshot()
			if lost > 0 {
				t.Errorf("%d of %d events routed to gateway were neither delivered nor dead-lettered (unrouted counted: %d)", lost, len(ids), unrouted)
			}
		})
	}
}

// Review of the destinations safety net with two configs. The checking
// sink asks covers() which subjects the named sink's consumer reads; for a
// sink this process runs, the answer was the filter this process bound,
// never read again, even once another config owned the sink (fixed: a
// fenced-off replica looks the filter up). A replica of the old config (gateway routed track and
// purchase) stays up, fenced off gateway, after a replica of the new
// config (gateway routed purchase only) narrowed gateway's filter. The
// old replica's first sink judged destinations events on the track
// subject as gateway's to deliver (its own, stale, filter reads track),
// so it dead-lettered nothing; gateway's consumer, under the new filter,
// never reads them: lost. Deterministic here: the new replica restarts (as in a
// rolling deploy) while the old one alone runs the first sink.
func TestDestinationsSafetyNetWithAStaleLocalFilter(t *testing.T) {
	t.Parallel() // waits on replicas and the vendor, not on the CPU
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := func(types ...string) []config.Route {
		return []config.Route{{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}, {Types: types, Sinks: []string{"gateway"}}}
	}
	old := e.Start([]config.Sink{first, gateway}, routes(envelope.TypeTrack, envelope.TypePurchase))
	nu := e.Start([]config.Sink{first, gateway}, routes(envelope.TypePurchase))
	testenv.Eventually(t, 10*time.Second, "the old replica fenced off gateway", func() bool { return old.Tally.Fenced("gateway") })
	if err := nu.Stop(); err != nil {
		t.Fatal(err)
	}
	var stray []string
	for i := range 5 {
		env := testenv.Track(t, "order_paid", fmt.Sprintf("u%d", i), envelope.WithDestinations("gateway"))
		raw, err := env.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		e.PublishRaw(e.Topo.EventSubjectFor(env.Type, env.PartitionKey()), env.ID, raw) // not the direct subject
		stray = append(stray, env.ID)
	}
	testenv.Eventually(t, 20*time.Second, "the old replica's first sink judged them", func() bool { return e.Idle("first") })
	e.Start([]config.Sink{first, gateway}, routes(envelope.TypePurchase)) // the new replica back
	marker := testenv.Track(t, "order_paid", "marker", envelope.WithDestinations("gateway"))
	e.Publish(marker) // the direct subject: gateway reads it, past the strays
	testenv.Eventually(t, 20*time.Second, "the marker delivered", allDelivered(t, e, []string{marker.ID}))
	testenv.Eventually(t, 20*time.Second, "settled", func() bool { return e.Idle("first", "gateway") })
	got, dead := gatewayIDs(t, e), unknownFor(t, e, "gateway")
	for _, id := range stray {
		if got[id]+dead[id] == 0 {
			t.Errorf("event %s with destinations [gateway] on the track subject: neither delivered nor dead-lettered", id)
		}
	}
}

// Review of the first sink's duty under filters. Only the lead reads
// every subject, so only it dead-letters an invalid envelope on a subject
// no route names, or an event on a subject the sink its type is routed to
// does not read. The lead was the config's first sink: a config that put
// a new sink first (or reordered them) narrowed the old first sink's
// filter at the new replica's bind, and the new first sink's consumer
// started at new events: what the old first sink had not read yet (its
// backlog, here a replica stopped a moment) was read by no consumer that
// checks it. Fixed: the lead is marked on the server and stays the lead
// whatever the order (ChooseLeads).
func TestReviewANewFirstSinkLeavesNoBacklogUnchecked(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}},
		{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}},
	}
	old := e.Start([]config.Sink{first, gateway}, routes)
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	// The old first sink's backlog: an invalid envelope, and a track
	// event on a subject gateway does not read.
	e.PublishRaw(e.Topo.EventSubject("com.shop.order.shipped"), "bad-1", []byte(`{"not":"an envelope"}`))
	stray := testenv.Track(t, "order_paid", "u1")
	raw, err := stray.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	e.PublishRaw(e.Streams.SubjectPrefix+".events.chapar.track", stray.ID, raw)
	zero := e.Sink("zero", emulator.Chabok, nil, nil)
	e.Start([]config.Sink{zero, first, gateway}, append([]config.Route{{Types: []string{envelope.TypeIdentify}, Sinks: []string{"zero"}}}, routes...))
	marker := testenv.Track(t, "order_paid", "marker")
	e.Publish(marker)
	testenv.Eventually(t, 20*time.Second, "the marker delivered", allDelivered(t, e, []string{marker.ID}))
	testenv.Eventually(t, 20*time.Second, "settled", func() bool { return e.Idle("zero", "first", "gateway") })
	if n := len(deadLetters(t, e, dlq.Filter{Reason: "invalid_envelope"})); n != 1 {
		t.Errorf("the invalid envelope in the old first sink's backlog: %d dead letters, want 1", n)
	}
	if gatewayIDs(t, e)[stray.ID]+unknownFor(t, e, "gateway")[stray.ID] == 0 {
		t.Errorf("the track event on %s.events.chapar.track: neither delivered nor dead-lettered", e.Streams.SubjectPrefix)
	}
}

// A config that drops the lead (docs/operations.md, "Removing the
// lead"): none of its sinks is marked, so its first sink is made the lead
// where it stands. What the old lead had not read by then (here it is
// paused), on subjects the new lead did not read before, would be checked
// by no one once the old lead is removed: an invalid envelope never
// dead-lettered, an event on a subject its sink does not read neither
// delivered nor dead-lettered. The new lead sweeps it (sweep.go).
func TestRemovingTheLeadLeavesItsBacklogChecked(t *testing.T) {
	t.Parallel() // waits on replicas and sweeps, not on the CPU
	for _, partitions := range []int{1, 2} {
		t.Run(fmt.Sprintf("partitions=%d", partitions), func(t *testing.T) {
			t.Parallel() // independent cases, each its own server
			removingTheLead(t, partitions)
		})
	}
}

func removingTheLead(t *testing.T, partitions int) {
	e := envWith(t, partitions)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
	old := e.Start([]config.Sink{first, gateway}, []config.Route{{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}, track})
	setPaused(t, e, "first", true)
	testenv.Eventually(t, 10*time.Second, "the lead paused", func() bool { return old.Tally.Paused("first") })
	// The lead's backlog; gateway reads past it.
	e.PublishRaw(e.Topo.EventSubject("com.shop.order.shipped"), "bad-1", []byte(`{"not":"an envelope"}`))
	stray := publishStray(t, e)
	ids := publishTracks(t, e, 5, "order_paid")
	testenv.Eventually(t, 20*time.Second, "gateway past the backlog", allDelivered(t, e, ids))
	// The config without the lead: gateway is marked and widened where it is.
	e.Start([]config.Sink{gateway}, []config.Route{track})
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.Topo.RemoveSink(ctx, e.JS, "first"); err != nil {
		t.Fatal(err)
	}
	marker := testenv.Track(t, "order_paid", "marker")
	e.Publish(marker)
	testenv.Eventually(t, 20*time.Second, "the marker delivered", allDelivered(t, e, []string{marker.ID}))
	testenv.Eventually(t, 20*time.Second, "the invalid envelope in the removed lead's backlog dead-lettered", func() bool {
		return len(deadLetters(t, e, dlq.Filter{Reason: "invalid_envelope"})) == 1
	})
	testenv.Eventually(t, 20*time.Second, "the stray track event delivered or dead-lettered", func() bool {
		return gatewayIDs(t, e)[stray.ID]+unknownFor(t, e, "gateway")[stray.ID] > 0
	})
	testenv.Eventually(t, 20*time.Second, "settled", func() bool { return e.Idle("gateway") })
	if n := len(deadLetters(t, e, dlq.Filter{Reason: "invalid_envelope"})); n != 1 {
		t.Errorf("the invalid envelope: %d dead letters, want 1", n)
	}
	if got, dead := gatewayIDs(t, e)[stray.ID], unknownFor(t, e, "gateway")[stray.ID]; got+dead != 1 {
		t.Errorf("the stray track event: delivered %d times, dead-lettered %d times; want one of the two, once", got, dead)
	}
}
