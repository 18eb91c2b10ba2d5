package dispatch_test

// Review of `dispatcher sinks remove` of a lead decided by
// topology.LeadRemoval on the takeover records a bind writes
// (dispatcher.go leadsAtBind): cases the change's own tests do not reach.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// leadRemovable reads and decides, as `dispatcher sinks remove` does,
// whether sink can go without a lead's check lost.
func leadRemovable(t *testing.T, e *testenv.Env, sink string) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lr, err := e.Topo.ReadLeadRemoval(ctx, e.JS, sink)
	if err != nil {
		t.Fatal(err)
	}
	return lr.Check()
}

// A takeover record lists the config's sinks (Takeover.Sinks), and the
// floors bucket takes values of at most 1 KiB: a config of 16 sinks with
// 60-character names (a sink name may have 63) does not fit. The bind
// logs a warning and goes on, and the removal of the old lead, which has
// a backlog as soon as an event is stored after its last replica stopped
// (it reads every subject), is refused for ever on a deployment taking
// events, though the new lead swept its backlog for every sink: only
// --force, which the refusal says may lose a check, removes it (red
// before). Fixed: the bucket's values may be 64 KiB (topology
// floorsValueMax).
func TestReviewATakeoverByAConfigOfManySinksIsRecorded(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sinkCfgs := []config.Sink{first, gateway}
	var many []string
	for i := range 16 {
		name := fmt.Sprintf("crm-%02d-%s", i, strings.Repeat("x", 53)) // 60 characters
		sinkCfgs = append(sinkCfgs, e.Sink(name, emulator.Chabok, nil, nil))
		many = append(many, name)
	}
	routes := []config.Route{
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}},
		{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}},
		{Types: []string{envelope.TypeIdentify}, Sinks: many},
	}
	if err := e.Start(sinkCfgs, routes).Stop(); err != nil {
		t.Fatal(err)
	}
	// The lead's backlog: events stored while no replica runs it.
	stray := publishStray(t, e)
	publishTracks(t, e, 3, "order_paid")
	// The config without the lead: gateway is made the lead in place of
	// first, and sweeps its backlog for every other sink of the config.
	e.Start(sinkCfgs[1:], routes[1:])
	testenv.Eventually(t, 30*time.Second, "the stray in the old lead's backlog judged for gateway", func() bool {
		return gatewayIDs(t, e)[stray.ID]+unknownFor(t, e, "gateway")[stray.ID] > 0
	})
	if err := leadRemovable(t, e, "first"); err != nil {
		t.Errorf("removal of the old lead once a config with every other sink made gateway the lead in place of it: %v", err)
	}
}

// The lead dropped from the config and that rolled out (gateway made the
// lead in place of it, its takeover recorded with the config's sinks),
// then a sink added in a later rollout, before the old lead is removed.
// The check counted the added sink as one the takeover's config lacked
// ("gateway, whose config lacked late"), and what the refusal says to do,
// start a dispatcher whose config lacks first and has the other sinks,
// recorded nothing new (gateway leads already, so no bind sweeps or
// writes a takeover again), while the old lead's backlog grows with every
// event stored (it reads every subject): refused for ever, --force the
// only way out (red before). Yet nothing was at risk: late's consumers
// start above everything the sweep checked, and gateway judges what it
// reads since by a config with late. Fixed: a bind of a lead adds the
// sinks of its config that start above the takeover's Through to the
// record (topology.WidenTakeovers). Still wedged, and left: two sets
// merged into one config, both leads kept, then one dropped.
func TestReviewASinkAddedAfterTheTakeoverDoesNotWedgeTheRemoval(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	late := e.Sink("late", emulator.Chabok, nil, nil)
	purchase := config.Route{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
	if err := e.Start([]config.Sink{first, gateway}, []config.Route{purchase, track}).Stop(); err != nil {
		t.Fatal(err)
	}
	stray := publishStray(t, e)
	// The rollout without the lead.
	y := e.Start([]config.Sink{gateway}, []config.Route{track})
	testenv.Eventually(t, 30*time.Second, "the stray in the old lead's backlog judged for gateway", func() bool {
		return gatewayIDs(t, e)[stray.ID]+unknownFor(t, e, "gateway")[stray.ID] > 0
	})
	if err := leadRemovable(t, e, "first"); err != nil {
		t.Fatalf("removal once the rollout without the lead made gateway the lead: %v", err)
	}
	// A later rollout adds a sink; the deployment takes events.
	if err := y.Stop(); err != nil {
		t.Fatal(err)
	}
	identify := config.Route{Types: []string{envelope.TypeIdentify}, Sinks: []string{"late"}}
	if err := e.Start([]config.Sink{gateway, late}, []config.Route{track, identify}).Stop(); err != nil {
		t.Fatal(err)
	}
	ids := publishTracks(t, e, 3, "order_paid")
	// What the refusal says to do: a dispatcher whose config lacks first
	// and has the other sinks, until it has checked the backlog.
	e.Start([]config.Sink{gateway, late}, []config.Route{track, identify})
	testenv.Eventually(t, 30*time.Second, "the events delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 30*time.Second, "settled", func() bool { return e.Idle("gateway", "late") })
	if err := leadRemovable(t, e, "first"); err != nil {
		t.Errorf("removal of the old lead once a sink was added after the takeover, and the refusal's advice followed: %v", err)
	}
}

// A takeover vouches for the old lead's backlog on the strength of the
// new lead's sweep of it, by the config that recorded it. A sweep cut
// short (the replica stopped) is resumed by the next bind that runs the
// new lead, whatever its config: one without a sink of the takeover's
// config judges the rest of the backlog without it. Removing the old
// lead while the sweep is not done, or once a config without that sink
// finished it, loses the strays for that sink the old lead had not
// read: they are below the new lead's position, and a lead made later
// for that sink (its set split off) sweeps from the new lead's floor.
// Every time the check allows it, the old lead is removed here; every
// stray must still be judged for s (red before: 2000 of 2000 lost, the
// removal allowed with the sweep cut short). Fixed: a takeover vouches
// once its lead's sweep is done (LeadRemoval.Unswept), and a bind that
// resumes the sweep narrows the takeover to its config's sinks
// (topology.NarrowTakeovers).
// With partitions, the strays spread over them, each partition's sweep
// recorded and resumed on its own.
func TestReviewATakeoverVouchesOnlyForASweepDoneByItsConfig(t *testing.T) {
	t.Parallel() // waits on replicas and sweeps, not on the CPU
	for _, n := range []int{1, 2} {
		t.Run(fmt.Sprintf("partitions=%d", n), func(t *testing.T) { takeoverVouches(t, n) })
	}
}

func takeoverVouches(t *testing.T, partitions int) {
	e := envWith(t, partitions)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	// s posts to the webhook vendor, whose requests name the event: a
	// stray above what s's consumer had read when it is made the lead is
	// read by its widened consumer and delivered, not dead-lettered
	// (which of the two depends on how far the server had moved the
	// filtered consumer past subjects it does not read).
	s := e.Sink("s", emulator.Webhook, nil, nil)
	purchase := config.Route{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway", "s"}}
	old := e.Start([]config.Sink{first, gateway, s}, []config.Route{purchase, track})
	setPaused(t, e, "first", true)
	testenv.Eventually(t, 10*time.Second, "the lead paused", func() bool { return old.Tally.Paused("first") })
	// The old lead's backlog: strays for gateway and s, which both read
	// past (many, so that the new lead's sweep takes a while).
	var strays []string
	for i := range 2000 {
		strays = append(strays, publishStrayOf(t, e, fmt.Sprintf("u%d", i)).ID)
	}
	ids := publishTracks(t, e, 5, "order_paid")
	testenv.Eventually(t, 30*time.Second, "gateway past the backlog", allDelivered(t, e, ids))
	testenv.Eventually(t, 30*time.Second, "gateway and s settled", func() bool { return e.Idle("gateway", "s") })
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	setPaused(t, e, "first", false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	removed := false
	removeIfAllowed := func(when string) {
		t.Helper()
		if removed || leadRemovable(t, e, "first") != nil {
			return
		}
		t.Logf("sinks remove first allowed %s", when)
		if _, err := e.Topo.RemoveSink(ctx, e.JS, "first"); err != nil {
			t.Fatal(err)
		}
		removed = true
	}
	// The config without the lead makes gateway the lead, records its
	// takeover with gateway and s, starts its sweep and stops at once.
	if err := e.Start([]config.Sink{gateway, s}, []config.Route{track}).Stop(); err != nil {
		t.Fatal(err)
	}
	floors, err := e.JS.KeyValue(ctx, e.Topo.FloorsBucket())
	if err != nil {
		t.Fatal(err)
	}
	if p, err := e.Topo.PendingSweeps(ctx, floors, "gateway"); err != nil || len(p) == 0 {
		t.Fatalf("gateway's sweep: %v %v, want it cut short by the stop", p, err)
	}
	removeIfAllowed("with the new lead's sweep cut short")
	// The sets split: gateway runs alone, and its bind resumes the
	// sweep, by a config without s.
	e.Start([]config.Sink{gateway}, []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}})
	testenv.Eventually(t, 60*time.Second, "gateway's sweep done", func() bool {
		p, err := e.Topo.PendingSweeps(ctx, floors, "gateway")
		return err == nil && len(p) == 0
	})
	removeIfAllowed("once a config without s finished the sweep")
	// And s in a config of its own: made its lead.
	e.Start([]config.Sink{s}, []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"s"}}})
	testenv.Eventually(t, 60*time.Second, "s's sweep done", func() bool {
		p, err := e.Topo.PendingSweeps(ctx, floors, "s")
		return err == nil && len(p) == 0
	})
	// Every sink of the old lead's set leads now, each having swept its
	// backlog: it goes.
	removeIfAllowed("once s leads too, its sweep done")
	if !removed {
		t.Errorf("sinks remove first refused once every sink of its set leads, each having swept its backlog: %v", leadRemovable(t, e, "first"))
	}
	// Judged: dead-lettered, or delivered, which may take a retry (a
	// webhook call timed out on a loaded machine waits for its retry, its
	// consumer idle meanwhile): polled, not read once.
	lost := func() int {
		judged := unknownFor(t, e, "s")
		for _, id := range webhookIDs(t, e) {
			judged[id]++
		}
		n := 0
		for _, id := range strays {
			if judged[id] == 0 {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(60 * time.Second)
	for lost() > 0 && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if n := lost(); n > 0 {
		t.Errorf("%d of %d strays for s in the removed lead's backlog neither delivered nor dead-lettered for s in 60 s (first removed: %v)", n, len(strays), removed)
	}
}

// The check's reads find no floors bucket (deleted, or a deployment from
// before it): no takeover is known, and a lead with a backlog is refused
// while another set leads, as with no record; one that has read
// everything goes.
func TestReviewALeadRemovalWithoutTheFloorsBucketRefusesABacklog(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	other := e.Sink("other", emulator.Chabok, nil, nil)
	x := e.Start([]config.Sink{first, gateway}, []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}})
	ids := publishTracks(t, e, 3, "order_paid")
	y := e.Start([]config.Sink{other}, []config.Route{{Types: []string{envelope.TypeIdentify}, Sinks: []string{"other"}}})
	testenv.Eventually(t, 20*time.Second, "delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 20*time.Second, "settled", func() bool { return e.Idle("first", "gateway", "other") })
	for _, d := range []*testenv.Dispatcher{x, y} {
		if err := d.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.JS.DeleteKeyValue(ctx, e.Topo.FloorsBucket()); err != nil {
		t.Fatal(err)
	}
	if err := leadRemovable(t, e, "first"); err != nil {
		t.Errorf("removal of a lead that read everything, without the floors bucket: %v", err)
	}
	publishTracks(t, e, 1, "order_paid") // its backlog
	if err := leadRemovable(t, e, "first"); err == nil || !strings.Contains(err.Error(), "no sink has been made the lead in place of it") {
		t.Errorf("removal of a lead with a backlog while another set leads, without the floors bucket: %v, want a refusal", err)
	}
}

// publishStrayOf is publishStray for a user: its partition's.
func publishStrayOf(t *testing.T, e *testenv.Env, user string) *envelope.Envelope {
	t.Helper()
	stray := testenv.Track(t, "order_paid", user)
	raw, err := stray.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	e.PublishRaw(e.Topo.EventSubjectFor("com.shop.order.shipped", stray.PartitionKey()), stray.ID, raw)
	return stray
}

// The takeover vouches only for what its sweep checked. A sink that could
// have had an event in the swept backlog, and whose check the sweep's
// config did not make, is not added when a later config with it runs the
// new lead: one the config dropped and a later one brought back, or one
// added later but started (sinks[].start) from before the takeover. Its
// stray in the old lead's backlog was judged for gateway alone, so the
// removal stays refused, naming it.
func TestATakeoverDoesNotVouchForASinkItsSweepMayHaveMissed(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	for _, tc := range []struct {
		name string
		// before says the sink ran with the old lead.
		before bool
		start  string
	}{
		{name: "dropped by the takeover's config, then back", before: true},
		{name: "added later, started from before the takeover", start: time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := testenv.New(t)
			first := e.Sink("first", emulator.Chabok, nil, nil)
			gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
			crm := e.Sink("crm", emulator.Chabok, nil, nil)
			crm.Start = tc.start
			purchase := config.Route{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}
			track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
			identify := config.Route{Types: []string{envelope.TypeIdentify}, Sinks: []string{"crm"}}
			old := []config.Sink{first, gateway}
			oldRoutes := []config.Route{purchase, track}
			if tc.before {
				old, oldRoutes = append(old, crm), append(oldRoutes, identify)
			}
			if err := e.Start(old, oldRoutes).Stop(); err != nil {
				t.Fatal(err)
			}
			stray := publishStray(t, e)
			y := e.Start([]config.Sink{gateway}, []config.Route{track})
			testenv.Eventually(t, 30*time.Second, "the stray in the old lead's backlog judged for gateway", func() bool {
				return gatewayIDs(t, e)[stray.ID]+unknownFor(t, e, "gateway")[stray.ID] > 0
			})
			if err := y.Stop(); err != nil {
				t.Fatal(err)
			}
			e.Start([]config.Sink{gateway, crm}, []config.Route{track, identify})
			ids := publishTracks(t, e, 3, "order_paid")
			testenv.Eventually(t, 30*time.Second, "the events delivered", allDelivered(t, e, ids))
			testenv.Eventually(t, 30*time.Second, "settled", func() bool { return e.Idle("gateway", "crm") })
			err := leadRemovable(t, e, "first")
			if err == nil || !strings.Contains(err.Error(), "gateway, whose config lacked crm") {
				t.Errorf("removal of the old lead, with crm not checked by the sweep of its backlog: %v, want a refusal naming crm", err)
			}
		})
	}
}

// Two sets of sinks, each with its lead (docs/operations.md, "Removing
// the lead"): first's set, and gateway's, whose first bind made gateway
// the lead in place of first (its takeover recorded with gateway alone).
// first's set then adds crm, created above the takeover's Through, and
// its lead judges crm's strays; gateway's set, without crm, judges them
// for gateway only. A stray for crm stored while first's set was down is
// in first's backlog, and gateway judged it without crm. Then crm moves
// to gateway's set (the sets merging): a bind of gateway with crm, and
// crm starts above Through, so the takeover was widened with crm and
// `sinks remove first` let first go, its backlog with it: the stray was
// never judged for crm (red before the fix: removal allowed). Only the
// bind that creates a sink, running the new lead, vouches that the new
// lead judged for it from its start (topology.WidenTakeovers).
func TestReviewASinkAddedByTheOldLeadsSetDoesNotJoinTheTakeover(t *testing.T) {
	t.Parallel() // waits on binds and sweeps, not on the CPU
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	crm := e.Sink("crm", emulator.Webhook, nil, nil)
	purchase := config.Route{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
	trackCRM := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"crm"}}
	both := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway", "crm"}}
	// first's set, then gateway's set's first bind: gateway made the lead
	// in place of first.
	if err := e.Start([]config.Sink{first}, []config.Route{purchase}).Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	floors, err := e.JS.KeyValue(ctx, e.Topo.FloorsBucket())
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Start([]config.Sink{gateway}, []config.Route{track}).Stop(); err != nil {
		t.Fatal(err)
	}
	// first's set adds crm: made above the takeover's Through, by a
	// config that runs first, not gateway.
	if err := e.Start([]config.Sink{first, crm}, []config.Route{purchase, trackCRM}).Stop(); err != nil {
		t.Fatal(err)
	}
	// While first's set is down: a stray for crm (and for gateway), which
	// gateway's set judges for gateway alone.
	g := e.Start([]config.Sink{gateway}, []config.Route{track})
	stray := publishStray(t, e)
	testenv.Eventually(t, 30*time.Second, "the stray judged for gateway", func() bool {
		return gatewayIDs(t, e)[stray.ID]+unknownFor(t, e, "gateway")[stray.ID] > 0
	})
	if err := g.Stop(); err != nil {
		t.Fatal(err)
	}
	// crm moves to gateway's set.
	e.Start([]config.Sink{gateway, crm}, []config.Route{both})
	ids := publishTracks(t, e, 3, "order_paid")
	testenv.Eventually(t, 30*time.Second, "the events delivered", allDelivered(t, e, ids))
	testenv.Eventually(t, 30*time.Second, "settled", func() bool { return e.Idle("gateway", "crm") })
	if p, err := e.Topo.PendingSweeps(ctx, floors, "gateway"); err != nil || len(p) > 0 {
		t.Fatalf("gateway's sweep: %v %v, want it done", p, err)
	}
	tks, err := e.Topo.Takeovers(ctx, floors, "first")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("takeovers of first: %+v", tks)
	if judged := unknownFor(t, e, "crm")[stray.ID]; judged > 0 {
		t.Fatalf("the stray was judged for crm (%d): the scenario does not hold", judged)
	}
	lr, err := e.Topo.ReadLeadRemoval(ctx, e.JS, "first")
	if err != nil {
		t.Fatal(err)
	}
	if lr.Pending == 0 {
		t.Fatalf("first's backlog: %d pending, want the stray", lr.Pending)
	}
	if err := lr.Check(); err == nil {
		t.Errorf("removal of first allowed, with a stray for crm in its backlog judged for gateway alone (its set judged crm's, " +
			"and gateway's set did not have crm): it would be lost")
	} else if !strings.Contains(err.Error(), "gateway, whose config lacked crm") {
		t.Errorf("removal of first: %v, want a refusal naming crm", err)
	}
}

// A takeover narrowed by the config that finished its sweep
// (NarrowTakeovers: s out, the rest of the backlog checked without it)
// is not widened back with s by a later config with s running the new
// lead: s's consumers were made before the takeover (at or below its
// Through, and by a config whose lead was first), so its strays in the
// old lead's backlog were judged for gateway alone, and the removal still
// names s. From the review of 6235979; green there (either guard of
// topology.WidenTakeovers holds it), red with both taken out.
func TestReviewANarrowedTakeoverIsNotWidenedBackWithASinkOfTheOldLead(t *testing.T) {
	t.Parallel() // waits on binds and sweeps; a slower sweep is only more surely cut short
	e := testenv.New(t)
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	s := e.Sink("s", emulator.Webhook, nil, nil)
	purchase := config.Route{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway", "s"}}
	old := e.Start([]config.Sink{first, gateway, s}, []config.Route{purchase, track})
	setPaused(t, e, "first", true)
	testenv.Eventually(t, 10*time.Second, "the lead paused", func() bool { return old.Tally.Paused("first") })
	// Many strays, so that the new lead's sweep is cut short by a stop.
	for i := range 2000 {
		publishStrayOf(t, e, fmt.Sprintf("u%d", i))
	}
	ids := publishTracks(t, e, 3, "order_paid")
	testenv.Eventually(t, 30*time.Second, "gateway past the backlog", allDelivered(t, e, ids))
	testenv.Eventually(t, 30*time.Second, "gateway and s settled", func() bool { return e.Idle("gateway", "s") })
	if err := old.Stop(); err != nil {
		t.Fatal(err)
	}
	setPaused(t, e, "first", false)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := e.Start([]config.Sink{gateway, s}, []config.Route{track}).Stop(); err != nil {
		t.Fatal(err)
	}
	floors, err := e.JS.KeyValue(ctx, e.Topo.FloorsBucket())
	if err != nil {
		t.Fatal(err)
	}
	if p, err := e.Topo.PendingSweeps(ctx, floors, "gateway"); err != nil || len(p) == 0 {
		t.Fatalf("gateway's sweep: %v %v, want it cut short by the stop", p, err)
	}
	// gateway alone resumes the sweep: the takeover narrowed to gateway.
	alone := e.Start([]config.Sink{gateway}, []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}})
	testenv.Eventually(t, 60*time.Second, "gateway's sweep done", func() bool {
		p, err := e.Topo.PendingSweeps(ctx, floors, "gateway")
		return err == nil && len(p) == 0
	})
	if err := alone.Stop(); err != nil {
		t.Fatal(err)
	}
	// s back with gateway: the new lead's bind with s.
	e.Start([]config.Sink{gateway, s}, []config.Route{track})
	more := publishTracks(t, e, 3, "order_paid")
	testenv.Eventually(t, 30*time.Second, "delivered", allDelivered(t, e, more))
	tks, err := e.Topo.Takeovers(ctx, floors, "first")
	if err != nil {
		t.Fatal(err)
	}
	for _, tk := range tks {
		if slices.Contains(tk.Sinks, "s") {
			t.Errorf("takeover %+v vouches for s, whose checks the rest of the sweep did not make", tk)
		}
	}
	if err := leadRemovable(t, e, "first"); err == nil || !strings.Contains(err.Error(), "gateway, whose config lacked s") {
		t.Errorf("removal of the old lead: %v, want a refusal naming s", err)
	}
}
