package dispatch_test

// Review of the lead recorded on the server (chapar.lead, ChooseLeads,
// sweep.go): cases the change's own tests do not reach.

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// The lead's mark lives on its consumer. A consumer lost while no
// dispatcher runs (an R1 consumer lost with its server, `nats consumer
// rm`) is recreated at the next bind from its recorded floor, but which
// sinks lead is read before that (topology.Leads): the lost lead is not
// seen, a config that does not list it first (reordering is documented as
// safe) makes its first sink the lead where it stands, and recreates the
// old lead from its floor reading only its types. What the old lead had
// not read, off those types (an invalid envelope, an event on a subject
// its sink does not read), is then checked by no one.
func TestReviewALeadConsumerLostWhileStoppedStaysTheLead(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	purchase := config.Route{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
	old := e.Start([]config.Sink{first, gateway}, []config.Route{purchase, track})
	setPaused(t, e, "first", true)
	testenv.Eventually(t, 10*time.Second, "the lead paused", func() bool { return old.Tally.Paused("first") })
	// The lead's backlog; gateway reads past it.
	e.PublishRaw(e.Topo.EventSubject("com.shop.order.shipped"), "bad-1", []byte(`{"not":"an envelope"}`))
	stray := publishStray(t, e)
	ids := publishTracks(t, e, 5, "order_paid")
	testenv.Eventually(t, 20*time.Second, "gateway past the backlog", allDelivered(t, e, ids))
	testenv.Eventually(t, 20*time.Second, "gateway settled", func() bool { return e.Idle("gateway") })
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	setPaused(t, e, "first", false)
	// The lead's consumer lost while nothing runs.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.JS.DeleteConsumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("first")); err != nil {
		t.Fatal(err)
	}
	// The same sinks, reordered.
	e.Start([]config.Sink{gateway, first}, []config.Route{purchase, track})
	marker := testenv.Track(t, "order_paid", "marker")
	e.Publish(marker)
	testenv.Eventually(t, 20*time.Second, "the marker delivered", allDelivered(t, e, []string{marker.ID}))
	testenv.Eventually(t, 20*time.Second, "settled", func() bool { return e.Idle("first", "gateway") })
	if s := stateOf(t, e, "first"); !s.lead || !s.readsEverything(e) {
		t.Errorf("the old lead, recreated: %+v, want still the lead, reading every subject", s)
	}
	if n := len(deadLetters(t, e, dlq.Filter{Reason: "invalid_envelope"})); n != 1 {
		t.Errorf("the invalid envelope in the lost lead's backlog: %d dead letters, want 1", n)
	}
	if got, dead := gatewayIDs(t, e)[stray.ID], unknownFor(t, e, "gateway")[stray.ID]; got+dead != 1 {
		t.Errorf("the stray track event: delivered %d times, dead-lettered %d times; want one of the two, once", got, dead)
	}
}

// A config that drops the lead, rolled out while a replica of the old
// config still delivers the new lead's events. The bind that makes the
// new lead reads what its consumer had passed over (topology.PriorReads:
// the last stream sequence it was delivered) before it widens it, and the
// sweep judges an event above that sequence as one the widened consumer
// reads itself. But the old replica keeps pulling in between: an event
// on a subject the new lead did not read, passed over by its consumer
// between the read and the widening, is read by no consumer and judged by
// no sweep. An event with destinations (or routed by type) to the new
// lead published on another type's subject is then neither delivered nor
// dead-lettered once the old lead is removed: 150 of 1,000 strays in one
// run, the 750 events the old replica was delivered between the read and
// the widening. Fixed: the consumers are held still (JetStream's consumer
// pause) from before the read until the widening update, which resumes
// them (topology.HoldForWidening).
func TestReviewANewLeadsPassedOverWindowIsSwept(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	if lost, total := newLeadWindow(t); lost > 0 {
		t.Errorf("%d of %d stray events passed over by the new lead's consumer while it was made the lead: neither delivered nor dead-lettered", lost, total)
	}
}

func newLeadWindow(t *testing.T) (lost, total int) {
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
	old := e.Start([]config.Sink{first, gateway}, []config.Route{{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}, track})
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	var strays []string
	trackSubject := e.Topo.EventSubject(envelope.TypeTrack)
	for i := range 5000 {
		if i%5 == 4 {
			strays = append(strays, publishStray(t, e).ID)
			continue
		}
		env := testenv.Track(t, "order_paid", fmt.Sprintf("user-%d", i))
		raw, err := env.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		e.PublishRaw(trackSubject, env.ID, raw)
	}
	// The old config's replica of gateway, still pulling while the new
	// config binds (a raw client, for its pace: what it is delivered
	// moves the consumer's position as a replica's pulls do). It acks the
	// track events and hands back anything else (what the widened
	// consumer delivers it), so it settles no stray.
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	c, err := e.JS.Consumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	pctx, stopPull := context.WithCancel(ctx)
	pulled := make(chan struct{})
	var pulling sync.WaitGroup
	pulling.Go(func() {
		once := sync.OnceFunc(func() { close(pulled) })
		for pctx.Err() == nil {
			batch, err := c.Fetch(200, jetstream.FetchMaxWait(time.Second))
			if err != nil {
				continue
			}
			for m := range batch.Messages() {
				if m.Subject() == trackSubject {
					_ = m.Ack()
				} else {
					_ = m.Nak()
				}
				once()
			}
		}
	})
	<-pulled
	// The new config, without the lead, binds meanwhile.
	e.Start([]config.Sink{gateway}, []config.Route{track})
	stopPull()
	pulling.Wait()
	if _, err := e.Topo.RemoveSink(ctx, e.JS, "first"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 180*time.Second, "gateway settled", func() bool { return e.Idle("gateway") })
	// The sweep runs beside the sink's pulls: wait for every stray to
	// have its outcome, for as long as the sweep of this backlog takes
	// and more; what has none by then has none.
	unjudged := func() int {
		got, dead := gatewayIDs(t, e), unknownFor(t, e, "gateway")
		n := 0
		for _, id := range strays {
			if got[id]+dead[id] == 0 {
				n++
			}
		}
		return n
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		if lost = unjudged(); lost == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	return lost, len(strays)
}

// A sweep cut short (the replica doing it stopped or crashed) was not
// resumed: the lead's mark is written, so the next bind sees a lead and
// swept nothing, and once the old lead was removed (`sinks remove`
// allows it: another sink leads) what the sweep had not reached was
// checked by no one (red before: the invalid envelope never
// dead-lettered). Fixed: the sweep is recorded in the floors bucket
// until done (topology.PendingSweep), and the next bind resumes it.
func TestReviewACutShortSweepIsResumed(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
	old := e.Start([]config.Sink{first, gateway}, []config.Route{{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}, track})
	setPaused(t, e, "first", true)
	testenv.Eventually(t, 10*time.Second, "the lead paused", func() bool { return old.Tally.Paused("first") })
	// The old lead's backlog: many strays for gateway (each a dead letter
	// the sweep writes), then an invalid envelope, which gateway passes
	// over; gateway reads past all of it.
	for range 2000 {
		publishStray(t, e)
	}
	e.PublishRaw(e.Topo.EventSubject("com.shop.order.shipped"), "bad-1", []byte(`{"not":"an envelope"}`))
	ids := publishTracks(t, e, 5, "order_paid")
	testenv.Eventually(t, 30*time.Second, "gateway past the backlog", allDelivered(t, e, ids))
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	// The new config's replica makes gateway the lead, starts its sweep,
	// and stops at once.
	if err := e.Start([]config.Sink{gateway}, []config.Route{track}).Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.Topo.RemoveSink(ctx, e.JS, "first"); err != nil {
		t.Fatal(err)
	}
	e.Start([]config.Sink{gateway}, []config.Route{track})
	testenv.Eventually(t, 60*time.Second, "the invalid envelope in the removed lead's backlog dead-lettered", func() bool {
		return len(deadLetters(t, e, dlq.Filter{Reason: "invalid_envelope"})) == 1
	})
}

// Two sets of sinks on one deployment (replicas running disjoint
// configs): each set has its lead. `dispatcher sinks remove` let the lead
// of one set go once any other sink was a lead, and the other set's lead
// is one. But the set's next config then makes its first sink the lead
// with the other set's lead as the only old lead on the server: it
// sweeps from that lead's floor, which is past what the removed lead had
// not read, and the other set's lead judged that backlog by its own
// routes, which do not name this set's sinks. An event on a subject its
// sink does not read, in the removed lead's backlog, was neither
// delivered nor dead-lettered (red before: the stray never judged).
// Fixed: the removal is refused while the lead has a backlog and no lead
// made in place of it, by a config with its set's sinks, recorded its
// sweep (topology.LeadRemoval); once the set's next config has made its
// lead, the removal goes and the stray is judged.
func TestReviewRemovingASetsLeadWhileAnotherSetLeads(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	other := e.Sink("other", emulator.Chabok, nil, nil)
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
	x := e.Start([]config.Sink{first, gateway}, []config.Route{{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}, track})
	setPaused(t, e, "first", true)
	testenv.Eventually(t, 10*time.Second, "the lead paused", func() bool { return x.Tally.Paused("first") })
	stray := publishStray(t, e)
	ids := publishTracks(t, e, 5, "order_paid")
	testenv.Eventually(t, 20*time.Second, "gateway past the stray", allDelivered(t, e, ids))
	// The other set starts: its own lead.
	e.Start([]config.Sink{other}, []config.Route{{Types: []string{envelope.TypeIdentify}, Sinks: []string{"other"}}})
	testenv.Eventually(t, 20*time.Second, "settled", func() bool { return e.Idle("other", "gateway") })
	if err := x.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	removable := func() error {
		t.Helper()
		lr, err := e.Topo.ReadLeadRemoval(ctx, e.JS, "first")
		if err != nil {
			t.Fatal(err)
		}
		return lr.Check()
	}
	if err := removable(); err == nil || !strings.Contains(err.Error(), "sink first is a lead with") {
		t.Fatalf("removal of a set's lead with a backlog while another set leads: %v, want a refusal", err)
	}
	// What the refusal says to do: the set's next config makes its lead,
	// which sweeps the backlog.
	e.Start([]config.Sink{gateway}, []config.Route{track})
	if err := removable(); err != nil {
		t.Fatalf("removal once the set's next lead recorded its sweep: %v", err)
	}
	if _, err := e.Topo.RemoveSink(ctx, e.JS, "first"); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 30*time.Second, "the stray in the removed lead's backlog delivered or dead-lettered for gateway", func() bool {
		return gatewayIDs(t, e)[stray.ID]+unknownFor(t, e, "gateway")[stray.ID] > 0
	})
}

// A set's lead that has read everything (nothing pending, nothing
// unacked) can be removed while another set leads, before the set's next
// config has made its lead: that lead sweeps from the other lead's floor,
// but nothing the removed one had not checked is below it, and its own
// consumer, pulled by no replica since (a replica running the removed
// lead would have stopped the removal), reads what came after. A stray
// stored after the removal is judged.
func TestRemovingADrainedSetsLeadWhileAnotherSetLeadsLosesNothing(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	other := e.Sink("other", emulator.Chabok, nil, nil)
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
	x := e.Start([]config.Sink{first, gateway}, []config.Route{{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}, track})
	before := publishStray(t, e)
	ids := publishTracks(t, e, 5, "order_paid")
	e.Start([]config.Sink{other}, []config.Route{{Types: []string{envelope.TypeIdentify}, Sinks: []string{"other"}}})
	testenv.Eventually(t, 20*time.Second, "delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 20*time.Second, "the stray judged by the lead", func() bool { return unknownFor(t, e, "gateway")[before.ID] > 0 })
	testenv.Eventually(t, 20*time.Second, "settled", func() bool { return e.Idle("first", "other", "gateway") })
	if err := x.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lr, err := e.Topo.ReadLeadRemoval(ctx, e.JS, "first")
	if err != nil {
		t.Fatal(err)
	}
	if !lr.Lead || lr.Pending+lr.AckPending != 0 || !lr.Others["other"] {
		t.Fatalf("read %+v, want first a lead with nothing pending, other a lead", lr)
	}
	if err := lr.Check(); err != nil {
		t.Fatalf("removal of a drained set's lead while another set leads: %v", err)
	}
	// Drained is what lets it go: other's bind swept in place of it, by
	// a config without gateway, which vouches for nothing here.
	busy := lr
	busy.Pending = 1
	if busy.Check() == nil {
		t.Fatalf("the same lead with an event pending: removable (%+v), want a refusal", busy)
	}
	if _, err := e.Topo.RemoveSink(ctx, e.JS, "first"); err != nil {
		t.Fatal(err)
	}
	after := publishStray(t, e)
	e.Start([]config.Sink{gateway}, []config.Route{track})
	testenv.Eventually(t, 30*time.Second, "the stray stored after the removal delivered or dead-lettered for gateway", func() bool {
		return gatewayIDs(t, e)[after.ID]+unknownFor(t, e, "gateway")[after.ID] > 0
	})
	if n := gatewayIDs(t, e)[before.ID] + unknownFor(t, e, "gateway")[before.ID]; n != 1 {
		t.Errorf("the stray before the removal: %d outcomes, want 1", n)
	}
}

// The bind's second read of the marks binds again while they differ from
// what it bound with (another config marked a sink meanwhile). Marks are
// only ever added, so this ends: three configs, each with a different
// first sink, started at once on a fresh deployment all bind, and every
// marked sink reads every subject.
func TestThreeConfigsBindingAFreshDeploymentAtOnceAllStart(t *testing.T) {
	t.Parallel() // waits on binds; any order of the racing binds must pass
	e := testenv.New(t)
	a := e.Sink("a", emulator.Chabok, nil, nil)
	b := e.Sink("b", emulator.Chabok, nil, nil)
	c := e.Sink("c", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"a"}},
		{Types: []string{envelope.TypeIdentify}, Sinks: []string{"b"}},
		{Types: []string{envelope.TypeTrack}, Sinks: []string{"c"}},
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, order := range [][]config.Sink{{a, b, c}, {b, c, a}, {c, a, b}} {
		wg.Go(func() { _, errs[i] = e.TryStart(order, routes) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("config %d: %v", i, err)
		}
	}
	leads := 0
	for _, s := range []string{"a", "b", "c"} {
		if st := stateOf(t, e, s); st.lead {
			leads++
			if !st.readsEverything(e) {
				t.Errorf("sink %s is marked the lead but reads %s", s, st.filters)
			}
		}
	}
	if leads == 0 {
		t.Fatal("no sink marked the lead")
	}
	ids := publishTracks(t, e, 5, "order_paid")
	testenv.Eventually(t, 20*time.Second, "the track events delivered", allDelivered(t, e, ids))
}
