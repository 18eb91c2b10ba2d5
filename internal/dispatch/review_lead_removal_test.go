package dispatch_test

// Review of `dispatcher sinks remove` of a lead decided by
// topology.LeadRemoval on the takeover records a bind writes
// (dispatcher.go leadsAtBind): cases the change's own tests do not reach.

import (
	"context"
	"fmt"
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
// then a sink added in a later rollout, before the old lead is removed:
// the removal is refused for ever. The check counts the added sink as
// one the takeover's config lacked ("gateway, whose config lacked
// late"), and what the refusal says to do, start a dispatcher whose
// config lacks first and has the other sinks, records nothing new:
// gateway leads already, so no bind sweeps or writes a takeover again.
// The old lead's backlog grows with every event stored (it reads every
// subject), so it never reads it all either. Yet nothing is at risk:
// gateway swept the backlog and reads everything since, by a config
// with late. Only --force, which says it may lose a check, removes it.
func TestReviewASinkAddedAfterTheTakeoverDoesNotWedgeTheRemoval(t *testing.T) {
	t.Skip("DEFECT (review): wedge, no loss: a sink added (in a config with the new lead) after the bind that made the new lead " +
		"in place of the old one is not in the takeover record's sinks, so `sinks remove` of the old lead refuses " +
		"(\"gateway, whose config lacked late\") for as long as the old lead has a backlog, which on a deployment taking events is for ever; " +
		"what the refusal says to do (start a config without the old lead, with the other sinks) records no new takeover (the new lead " +
		"is marked already), so only --force removes it, though the new lead swept the backlog and judges everything since by a config with the added sink")
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
