package dispatch_test

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// healLeadConfigs are two configs sharing the sink gateway (track by
// type): a, whose lead is first, and b, which runs gateway alone and so
// makes it the lead (marked, reading every subject) when it binds after
// a. a's replica, bound before the mark, is then fenced off gateway.
func healLeadConfigs(e *testenv.Env) (aSinks []config.Sink, aRoutes []config.Route, bSinks []config.Sink, bRoutes []config.Route) {
	first := e.Sink("first", emulator.Chabok, nil, nil)
	gateway := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	track := config.Route{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}}
	return []config.Sink{first, gateway}, []config.Route{{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}}, track},
		[]config.Sink{gateway}, []config.Route{track}
}

// readsAll says a consumer in state s reads every subject: filtered on
// the whole stream (a bind's), or not filtered (a healer's recreation
// for another config's fence: topology.FiltersOf says none).
func readsAll(e *testenv.Env, s consumerState) bool {
	return s.readsEverything(e) || s.filters == fmt.Sprint([]string{})
}

// Issue 20's open item. The healer of a replica that bound gateway
// before another config marked it the lead recreated a lost consumer
// from what it saw at its bind: whole-stream (another config's fence),
// but with no lead mark. The lead then runs in no config: the next bind
// of a's config (a restart, a rollback) narrowed gateway to its types,
// and a stray it had not read yet (a track event on another type's
// subject, which first, a's lead, left to gateway because gateway's
// consumer read every subject when first saw it) was neither delivered
// nor dead-lettered.
func TestHealerKeepsTheLeadMarkAnotherConfigAdded(t *testing.T) {
	t.Parallel() // mostly waits out the healer's settle time and the stray's deadline
	e := testenv.New(t)
	aSinks, aRoutes, bSinks, bRoutes := healLeadConfigs(e)
	a := e.Start(aSinks, aRoutes)
	b := e.Start(bSinks, bRoutes)
	if s := stateOf(t, e, "gateway"); !s.lead || !s.readsEverything(e) {
		t.Fatalf("gateway after b bound: %+v, want marked the lead, reading every subject", s)
	}
	testenv.Eventually(t, 10*time.Second, "a's replica fenced off gateway", func() bool { return a.Tally.Fenced("gateway") })
	// b's replica is down (a restart in its rollout) when gateway's
	// consumer is lost: a's healer recreates it.
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, name := e.Topo.EventsStream(), topology.SinkConsumer("gateway")
	if err := e.JS.DeleteConsumer(ctx, stream, name); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "gateway's consumer recreated", func() bool {
		_, err := e.JS.Consumer(ctx, stream, name)
		return err == nil
	})
	if s := stateOf(t, e, "gateway"); !s.lead || !readsAll(e, s) {
		t.Errorf("gateway recreated by a's healer: %+v, want still marked the lead, reading every subject", s)
	}

	// A stray in gateway's backlog, which first passes over (gateway
	// reads its subject), then a's config binds again.
	stray := publishStray(t, e)
	testenv.Eventually(t, 20*time.Second, "first read past the stray", func() bool { return e.Idle("first") })
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	e.Start(aSinks, aRoutes)
	testenv.Eventually(t, 30*time.Second, "the stray delivered to gateway or dead-lettered for it", func() bool {
		return gatewayIDs(t, e)[stray.ID]+unknownFor(t, e, "gateway")[stray.ID] > 0
	})
	if s := stateOf(t, e, "gateway"); !s.lead || !readsAll(e, s) {
		t.Errorf("gateway after a's config bound again: %+v, want still the lead, reading every subject", s)
	}
}

// The same replica's healer writes gateway's floor to the floors bucket
// as it moves, with the lead mark it saw at its bind: none. The record
// said gateway led until a's healer wrote it; after, a loss of gateway's
// consumer while no dispatcher runs made it a sink like any other at the
// next bind (topology.Leads reads the floors for a sink without
// consumers), the loss TestReviewALeadConsumerLostWhileStoppedStaysTheLead
// shows.
//
// Once a's healer has looked at the consumer b bound, it recreates it as
// b left it: marked, and with b's ack_wait, not a's (b's replicas keep
// what they hold alive every third of their own ack_wait: a shorter one
// had it delivered again while held).
func TestHealerFloorRecordKeepsTheLeadMarkAnotherConfigAdded(t *testing.T) {
	t.Parallel() // mostly waits out the healer's looks
	e := testenv.New(t)
	aSinks, aRoutes, bSinks, bRoutes := healLeadConfigs(e)
	a := e.Start(aSinks, aRoutes)
	const bAckWait = 9 * time.Second
	b := e.Start(bSinks, bRoutes, func(d *config.Dispatcher) { d.AckWait = bAckWait })
	testenv.Eventually(t, 10*time.Second, "a's replica fenced off gateway", func() bool { return a.Tally.Fenced("gateway") })
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	floors, err := e.JS.KeyValue(ctx, e.Topo.FloorsBucket())
	if err != nil {
		t.Fatal(err)
	}
	stream := e.Topo.EventsStream()
	readFloor := func() topology.Floor {
		t.Helper()
		entry, err := floors.Get(ctx, topology.FloorKey("gateway", stream))
		if err != nil {
			t.Fatal(err)
		}
		var f topology.Floor
		if err := json.Unmarshal(entry.Value(), &f); err != nil {
			t.Fatal(err)
		}
		return f
	}
	if f := readFloor(); !f.Lead {
		t.Fatalf("gateway's floor record after b bound: %+v, want it marked the lead", f)
	}
	// gateway's floor moves with no replica of b running (acked here: a
	// pulls nothing for a sink it is fenced off), so only a's healer
	// writes it.
	publishTracks(t, e, 3, "order_paid")
	c, err := e.JS.Consumer(ctx, stream, topology.SinkConsumer("gateway"))
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for acked := 0; acked < 3; {
		batch, err := c.Fetch(3-acked, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for msg := range batch.Messages() {
			meta, err := msg.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			if err := msg.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
			last = max(last, meta.Sequence.Stream)
			acked++
		}
		if err := batch.Error(); err != nil {
			t.Fatal(err)
		}
	}
	testenv.Eventually(t, 20*time.Second, "a's healer recorded gateway's new floor", func() bool { return readFloor().AckFloor >= last })
	if f := readFloor(); !f.Lead {
		t.Errorf("gateway's floor record written by a's healer: %+v, want it still marked the lead", f)
	}
	// a's healer has looked since b bound (it wrote the floor it read).
	name := topology.SinkConsumer("gateway")
	if err := e.JS.DeleteConsumer(ctx, stream, name); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "gateway's consumer recreated", func() bool {
		_, err := e.JS.Consumer(ctx, stream, name)
		return err == nil
	})
	if c, err = e.JS.Consumer(ctx, stream, name); err != nil {
		t.Fatal(err)
	}
	if info := c.CachedInfo(); !topology.IsLead(info) || info.Config.AckWait != bAckWait {
		t.Errorf("gateway recreated by a's healer: marked the lead %v, ack_wait %s; want marked, and its owner's ack_wait %s",
			topology.IsLead(info), info.Config.AckWait, bAckWait)
	}
	// What the next bind reads if gateway's consumer is lost while no
	// dispatcher runs.
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := e.JS.DeleteConsumer(ctx, stream, topology.SinkConsumer("gateway")); err != nil {
		t.Fatal(err)
	}
	leads, err := e.Topo.Leads(ctx, e.JS, floors, []string{"first", "gateway"})
	if err != nil {
		t.Fatal(err)
	}
	if !leads["gateway"] {
		t.Errorf("gateway's consumer lost while no dispatcher runs: marked leads %v, want gateway among them", leads)
	}
}

// Two replicas heal a lost consumer at once: the first to create it
// wins (topology.RecreateConsumer creates, never updates), and the
// other keeps what it finds. A winner that had not seen the lead mark
// (its last look was before the bind that marked the sink, or it runs a
// version that recreated from its bind) recreates it unmarked: the
// replica that knows the mark puts it back, reading every subject, as a
// marked lead's consumer does. Here the winner is the test, creating
// the consumer the moment it is deleted, as each kind of stale healer
// did; a's healer finds it there (after its settle time, or at its next
// look).
func TestHealerPutsBackALeadMarkAnotherHealerDropped(t *testing.T) {
	t.Parallel() // mostly waits out the healer's look
	for _, tt := range []struct {
		name  string
		stale func(bound, marked jetstream.ConsumerConfig) jetstream.ConsumerConfig
	}{
		{"the owner's fence, the whole stream, no mark (a healer from before this fix)", func(_, marked jetstream.ConsumerConfig) jetstream.ConsumerConfig {
			cfg := marked
			cfg.Metadata = maps.Clone(cfg.Metadata)
			delete(cfg.Metadata, topology.LeadMetadata)
			cfg.FilterSubject, cfg.FilterSubjects = "", nil
			return cfg
		}},
		{"its own bind's config: its fence, its types, no mark (a healer from before fences were kept)", func(bound, _ jetstream.ConsumerConfig) jetstream.ConsumerConfig {
			return bound
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := testenv.New(t)
			aSinks, aRoutes, bSinks, bRoutes := healLeadConfigs(e)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			stream, name := e.Topo.EventsStream(), topology.SinkConsumer("gateway")
			config := func() jetstream.ConsumerConfig {
				t.Helper()
				c, err := e.JS.Consumer(ctx, stream, name)
				if err != nil {
					t.Fatal(err)
				}
				return c.CachedInfo().Config
			}
			a := e.Start(aSinks, aRoutes)
			bound := config()
			b := e.Start(bSinks, bRoutes)
			testenv.Eventually(t, 10*time.Second, "a's replica fenced off gateway", func() bool { return a.Tally.Fenced("gateway") })
			if err := b.Stop(); err != nil {
				t.Fatal(err)
			}
			c, err := e.JS.Consumer(ctx, stream, name)
			if err != nil {
				t.Fatal(err)
			}
			info := c.CachedInfo()
			if err := e.JS.DeleteConsumer(ctx, stream, name); err != nil {
				t.Fatal(err)
			}
			if _, created, err := topology.RecreateConsumer(ctx, e.JS, stream, tt.stale(bound, info.Config), info.AckFloor.Stream+1); err != nil || !created {
				t.Fatalf("the stale healer's recreation: created %v, %v", created, err)
			}
			testenv.Eventually(t, 20*time.Second, "gateway marked the lead again, reading every subject", func() bool {
				s := stateOf(t, e, "gateway")
				return s.lead && readsAll(e, s)
			})
		})
	}
}
