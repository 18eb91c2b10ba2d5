package faults

// Lifecycle scenarios (issue 19, "nothing lost when the deployment
// changes"): the deployment changes under load, as operators change it:
// a consumer deleted by mistake, a rolling deploy that widens a sink's
// routes, a sink added and then removed by command, consumer leaders
// stepping down while an ordered sink retries. Every acked event is
// accounted for at the vendor ledger, as in the other scenarios.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// healDeadline is how soon a deleted consumer must be back: the healer
// looks every 5 s and lets a loss settle for 1 s (internal/dispatch,
// heal.go); the rest is slack for a shared 2-core machine.
const healDeadline = 15 * time.Second

// consumerNamed finds a consumer by name on any stream.
func (w *world) consumerNamed(name string) (consumerState, bool) {
	cs, err := w.consumers()
	if err != nil {
		return consumerState{}, false
	}
	for _, c := range cs {
		if c.name == name {
			return c, true
		}
	}
	return consumerState{}, false
}

// deleteAndAwaitHeal deletes a consumer (as `nats consumer rm` would) and
// waits until a replica has recreated it. It returns when the consumer
// was deleted and how long it was gone.
func (w *world) deleteAndAwaitHeal(c consumerState) (time.Time, time.Duration) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.js.DeleteConsumer(ctx, c.stream, c.name); err != nil {
		w.t.Fatalf("delete consumer %s/%s: %v", c.stream, c.name, err)
	}
	deleted := time.Now()
	if waitFor(healDeadline, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_, err := w.js.Consumer(ctx, c.stream, c.name)
		return err == nil
	}) != nil {
		return deleted, -1
	}
	return deleted, time.Since(deleted)
}

// streamMsgs is how many messages a stream holds (0 if it cannot say).
func (w *world) streamMsgs(stream string) uint64 {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := w.js.Stream(ctx, stream)
	if err != nil {
		return 0
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0
	}
	return info.State.Msgs
}

// recoveryOf is outcome.recovery over some of the events: for each fault,
// the time from it until every one of ids acked before it was delivered
// (first 2xx) or dead-lettered; the slowest fault's, or -1 if one of
// them never was.
func (w *world) recoveryOf(ids []string, ackedAt map[string]time.Time, faults []time.Time) time.Duration {
	snap := w.vendor.snapshot()
	var worst time.Duration
	for _, h := range faults {
		for _, id := range ids {
			if !ackedAt[id].Before(h) {
				continue
			}
			at := snap[id].firstOK
			if dl := w.dlq.ids[id]; dl.count > 0 && (at.IsZero() || dl.at.Before(at)) {
				at = dl.at
			}
			if at.IsZero() {
				return -1
			}
			worst = max(worst, at.Sub(h))
		}
	}
	return worst
}

// sumMetric adds a series over every replica.
func (w *world) sumMetric(series string) float64 {
	var sum float64
	for _, d := range w.disps {
		v, _ := d.metric(series)
		sum += v
	}
	return sum
}

// (h) a sink's consumers deleted under load, as by an operator's `nats
// consumer rm`: first the events consumer, then the retries consumer
// while retries wait in it (the vendor fails one request in 20). The
// replicas run on; they must notice, recreate each consumer where it was
// (its ack floor, read every 5 s), and lose nothing. What was acked since
// the last floor read is delivered again: those are the duplicates
// at-least-once allows here, bounded by the vendor's 2xx answers from 6 s
// (a floor read plus the settle) before a deletion until it was healed.
func TestConsumerDeletedUnderLoad(t *testing.T) {
	events, perSec := 4000, 500
	if long() {
		events = 40_000
	}
	w := newWorld(t, 1, 2, nil)
	w.vendor.set(func(l *ledger) { l.flakyEvery = 20 })
	w.prod.start(newIDs(events), perSec)

	var faults []time.Time
	var healed []string
	healedOK := true
	bound := 0
	w.waitAcked(events / 3)
	del := func(name string) {
		c, ok := w.consumerNamed(name)
		if !ok {
			t.Fatalf("no consumer %s", name)
		}
		at, gone := w.deleteAndAwaitHeal(c)
		faults = append(faults, at)
		if gone < 0 {
			healedOK = false
			healed = append(healed, name+": never")
			return
		}
		healed = append(healed, fmt.Sprintf("%s %s", name, fmtDur(gone)))
		bound += w.vendor.okBetween(at.Add(-6*time.Second), at.Add(gone))
		t.Logf("deleted %s/%s (pending %d, ack pending %d); back after %s", c.stream, c.name, c.pending, c.ackPending, gone)
	}
	del("sink-chabok")

	// The retries consumer, while retries wait in it.
	w.waitAcked(events * 2 / 3)
	// A waiting retry is a scheduled message in the retries stream; the
	// consumer sees it only once it is due.
	rc, ok := w.consumerNamed("retry-chabok")
	if !ok {
		t.Fatal("no consumer retry-chabok")
	}
	eventually(t, 30*time.Second, "retries waiting", func() bool { return w.streamMsgs(rc.stream) > 0 })
	waiting := w.streamMsgs(rc.stream)
	del("retry-chabok")
	o := w.settle(60*time.Second, faults...)

	restarted := 0
	for _, d := range w.disps {
		if !d.running() {
			restarted++
		}
	}
	losses := w.sumMetric(`chapar_consumer_losses_total{sink="chabok"}`)
	g := &goals{t: t}
	g.want(o.lost == 0, "%d events lost", o.lost)
	g.want(!o.wedged, "wedged: %v", o.stuck)
	g.want(healedOK, "a consumer was not recreated within %s: %v", healDeadline, healed)
	g.want(restarted == 0, "%d replicas exited", restarted)
	g.want(losses >= 2, "chapar_consumer_losses_total over the replicas is %v, want at least 2", losses)
	g.want(o.deadLettered+o.both == 0, "%d dead letters with a vendor that fails 1 in 20", o.deadLettered+o.both)
	g.want(o.duplicates <= bound, "%d duplicates; at most %d events were acked between the last ack floor read and each recreation", o.duplicates, bound)
	g.finish(result{
		scenario: "h. consumer deleted under load",
		load:     fmt.Sprintf("%d events at %d/s, 2 replicas", events, perSec),
		o:        o,
		notes: fmt.Sprintf("vendor fails 1 request in 20 (503); deleted the events consumer, then the retries consumer with %d retries waiting; recreated after: %s, no restart; losses counted %v; duplicates ≤ %d (2xx from 6 s before each deletion until it was healed: acked since the last ack floor read)",
			waiting, strings.Join(healed, ", "), losses, bound),
	}, "")
}

// (i) a rolling deploy that widens a sink's routes, under load, over
// three replicas: the old config sends chabok only the order_paid events,
// the new one every chapar.track (half of the load is signup). Each
// replica in turn is stopped (SIGTERM), given the new config and started.
// The first new replica's start fences the old ones off the sink: from
// then on no replica may skip, as the old routes would, what the new ones
// send. Goals: every order_paid delivered; every signup acked after the
// first new replica was ready delivered (0 lost); a fenced replica
// delivers nothing acked after it reported itself fenced
// (chapar_sink_fenced); duplicates only from deliveries in flight at a
// stop. Signups acked before that were the old config's to skip, and are
// counted apart. Each replica's vendor URL names it, so the ledger knows
// which replica and config delivered what.
func TestRollingRouteChange(t *testing.T) {
	events, perSec := 6000, 500
	if long() {
		events = 60_000
	}
	w := newWorld(t, 1, 0, nil)
	oldCfg, newCfg := w.cfg, w.cfg
	oldCfg.Routes = "  - types: [chapar.track]\n    names: [order_paid]\n    sinks: [chabok]\n"
	newCfg.Routes = "  - types: [chapar.track]\n    sinks: [chabok]\n"
	tagged := func(c dispatcherConfig, tag string) dispatcherConfig {
		c.VendorURL = w.vendor.url + "/t/" + tag
		return c
	}
	for i := range 3 {
		name := fmt.Sprintf("dispatcher-%d", i+1)
		w.disps = append(w.disps, startDispatcher(t, w.dir, name, tagged(oldCfg, name+"-old"), urls(w.nodes)))
	}
	names := map[string]string{}
	w.prod.shape = func(seq int) (string, []string) {
		if seq%2 == 0 {
			return "order_paid", nil
		}
		return "signup", nil
	}
	ids := newIDs(events)
	for i, id := range ids {
		names[id], _ = w.prod.shape(i)
	}
	w.prod.start(ids, perSec)

	var firstNew time.Time
	fencedAt := map[string]time.Time{} // old replica tag -> when it said it was fenced
	var faults []time.Time
	for i, d := range w.disps {
		w.waitAcked(events * (i + 1) / 5)
		d.reconfigure(t, tagged(newCfg, d.name+"-new"))
		faults = append(faults, time.Now())
		t.Logf("%s runs the new routes", d.name)
		if i > 0 {
			continue
		}
		firstNew = time.Now()
		for _, old := range w.disps[1:] {
			eventually(t, 15*time.Second, old.name+" fenced off chabok", func() bool {
				v, ok := old.metric(`chapar_sink_fenced{sink="chabok"}`)
				return ok && v == 1
			})
			fencedAt[old.name+"-old"] = time.Now()
		}
		t.Logf("the old replicas are fenced %s after the first new one was ready", fmtDur(time.Since(firstNew)))
	}
	o := w.settle(60*time.Second, faults...)

	acked, ackedAt := w.prod.ackedIDs()
	oks := w.vendor.okTags()
	var owed, lost, skippedOld, fencedDelivered, dups int
	var owedIDs []string
	for _, id := range acked {
		calls := oks[id]
		dups += max(len(calls)-1, 0)
		if names[id] == "signup" && ackedAt[id].Before(firstNew) {
			if len(calls) == 0 {
				skippedOld++
			}
			continue
		}
		owed++
		owedIDs = append(owedIDs, id)
		if len(calls) == 0 && w.dlq.ids[id].count == 0 {
			lost++
		}
		for _, c := range calls {
			if f, ok := fencedAt[c.tag]; ok && ackedAt[id].After(f) {
				fencedDelivered++
			}
		}
	}
	o.lost, o.duplicates = lost, dups
	o.recovery = w.recoveryOf(owedIDs, ackedAt, faults)
	inFlight := len(w.disps) * w.cfg.Concurrency
	g := &goals{t: t}
	g.want(lost == 0, "%d of %d events the routes send lost", lost, owed)
	g.want(!o.wedged, "wedged: %v", o.stuck)
	g.want(fencedDelivered == 0, "fenced replicas delivered %d events acked after they were fenced", fencedDelivered)
	g.want(o.deadLettered+o.both == 0, "%d dead letters with a healthy vendor", o.deadLettered+o.both)
	g.want(dups <= inFlight, "%d duplicates; at most %d deliveries were in flight at the stops", dups, inFlight)
	g.finish(result{
		scenario: "i. rolling route change, 3 replicas",
		load:     fmt.Sprintf("%d events at %d/s (half order_paid, half signup), 3 replicas restarted in turn", events, perSec),
		o:        o,
		notes: fmt.Sprintf("routes order_paid → every chapar.track; %d events owed by the routes in force (every order_paid, every signup acked after the first new replica was ready), %d lost; %d earlier signups skipped by the old routes, as they say; fenced replicas delivered %d events acked after they were fenced; lost, duplicates and recovery count the owed events",
			owed, lost, skippedOld, fencedDelivered),
	}, "")
}
