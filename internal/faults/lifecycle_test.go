package faults

// Lifecycle scenarios (issue 19, "nothing lost when the deployment
// changes"): the deployment changes under load, as operators change it:
// a consumer deleted by mistake, a rolling deploy that widens a sink's
// routes, a sink added and then removed by command, consumer leaders
// stepping down while an ordered sink retries. Every acked event is
// accounted for at the vendor ledger, as in the other scenarios.

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
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
// while retries wait in it, once (5 times in the long form) (the vendor fails one request in 20). The
// replicas run on; they must notice, recreate each consumer where it was
// (its ack floor, read every 5 s), and lose nothing. What was acked since
// the last floor read is delivered again: those are the duplicates
// at-least-once allows here, bounded by the vendor's 2xx answers from 6 s
// (a floor read plus the settle) before a deletion until it was healed.
func TestConsumerDeletedUnderLoad(t *testing.T) {
	events, perSec, rounds := 4000, 500, 1
	if long() {
		events, rounds = 40_000, 5
	}
	w := newWorld(t, 1, 2, nil)
	w.vendor.set(func(l *ledger) { l.flakyEvery = 20 })
	w.prod.start(newIDs(events), perSec)

	var faults []time.Time
	var healed []string
	healedOK := true
	bound := 0
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
	var waiting []uint64
	for r := range rounds {
		w.waitAcked(events * (2*r + 1) / (2*rounds + 1))
		del("sink-chabok")

		// The retries consumer, while retries wait in it.
		w.waitAcked(events * (2*r + 2) / (2*rounds + 1))
		// A waiting retry is a scheduled message in the retries stream;
		// the consumer sees it only once it is due.
		rc, ok := w.consumerNamed("retry-chabok")
		if !ok {
			t.Fatal("no consumer retry-chabok")
		}
		eventually(t, 30*time.Second, "retries waiting", func() bool { return w.streamMsgs(rc.stream) > 0 })
		waiting = append(waiting, w.streamMsgs(rc.stream))
		del("retry-chabok")
	}
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
	g.want(losses >= float64(2*rounds), "chapar_consumer_losses_total over the replicas is %v, want at least %d", losses, 2*rounds)
	g.want(o.deadLettered+o.both == 0, "%d dead letters with a vendor that fails 1 in 20", o.deadLettered+o.both)
	g.want(o.duplicates <= bound, "%d duplicates; at most %d events were acked between the last ack floor read and each recreation", o.duplicates, bound)
	g.finish(result{
		scenario: "h. consumer deleted under load",
		load:     fmt.Sprintf("%d events at %d/s, 2 replicas", events, perSec),
		o:        o,
		notes: fmt.Sprintf("vendor fails 1 request in 20 (503); %d× deleted the events consumer, then the retries consumer with retries waiting (%v); recreated after: %s, no restart; losses counted %v; duplicates ≤ %d (2xx from 6 s before each deletion until it was healed: acked since the last ack floor read)",
			rounds, waiting, strings.Join(healed, ", "), losses, bound),
	}, "")
}

// (l) a sink's events consumer deleted while every replica is down (an
// operator's `nats consumer rm` during a full restart; an R1 consumer lost
// with its server during an outage of the dispatchers), under load: one
// replica crashes (SIGKILL: its last floor written is up to 5 s old), the
// other stops (SIGTERM: it writes its floor as it stops), the consumer is
// deleted, the producer goes on, both start again. The next start finds
// the consumer missing and recreates it above the floor recorded in
// CHAPAR_FLOORS (internal/dispatch, heal.go): nothing published meanwhile
// is lost. What was acked since the last floor written is delivered again:
// the duplicates at-least-once allows here, bounded by the vendor's 2xx
// answers from 6 s (a floor written every 5 s, plus slack) before the stop.
func TestConsumerDeletedWhileReplicasAreDown(t *testing.T) {
	events, perSec := 4000, 500
	if long() {
		events = 40_000
	}
	w := newWorld(t, 1, 2, nil)
	w.prod.start(newIDs(events), perSec)
	w.waitAcked(events / 3)
	down := time.Now()
	w.disps[0].kill()
	w.disps[1].stop(10 * time.Second)
	c, ok := w.consumerNamed("sink-chabok")
	if !ok {
		t.Fatal("no consumer sink-chabok")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := w.js.DeleteConsumer(ctx, c.stream, c.name); err != nil {
		t.Fatalf("delete consumer %s/%s: %v", c.stream, c.name, err)
	}
	t.Logf("deleted %s/%s with every replica down (pending %d)", c.stream, c.name, c.pending)
	w.waitAcked(events / 2) // published while no replica runs
	bound := w.vendor.okBetween(down.Add(-6*time.Second), down.Add(time.Minute))
	for _, d := range w.disps {
		d.restart(t)
	}
	up := time.Now()
	o := w.settle(60*time.Second, up)
	losses := w.sumMetric(`chapar_consumer_losses_total{sink="chabok"}`)
	g := &goals{t: t}
	g.want(o.lost == 0, "%d events lost", o.lost)
	g.want(!o.wedged, "wedged: %v", o.stuck)
	g.want(losses >= 1, "chapar_consumer_losses_total over the replicas is %v, want at least 1", losses)
	g.want(o.deadLettered+o.both == 0, "%d dead letters with a healthy vendor", o.deadLettered+o.both)
	g.want(o.duplicates <= bound, "%d duplicates; at most %d events were acked from 6 s before the stop", o.duplicates, bound)
	g.finish(result{
		scenario: "l. consumer deleted while every replica is down",
		load:     fmt.Sprintf("%d events at %d/s, 2 replicas", events, perSec),
		o:        o,
		notes: fmt.Sprintf("at a third of the load, one replica killed (SIGKILL), the other stopped (SIGTERM), sink-chabok deleted, both started again %s later; losses counted %v; duplicates ≤ %d (2xx from 6 s before the stop: acked since the last floor written)",
			fmtDur(up.Sub(down)), losses, bound),
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

// sinkFootprint is what `dispatcher sinks remove --json` reports.
type sinkFootprint struct {
	Consumers []struct {
		Stream     string `json:"stream"`
		Name       string `json:"name"`
		Pending    uint64 `json:"pending"`
		AckPending int    `json:"ack_pending"`
	} `json:"consumers"`
	Retries uint64 `json:"retries"`
	Removed bool   `json:"removed"`
}

func (f sinkFootprint) dropped() uint64 {
	n := f.Retries
	for _, c := range f.Consumers {
		n += c.Pending + uint64(c.AckPending)
	}
	return n
}

// sinksRemove runs `dispatcher sinks remove NAME --json` (with --yes if
// yes) against the world's NATS.
func (w *world) sinksRemove(name, config string, yes bool) (sinkFootprint, error) {
	args := []string{"sinks", "remove", name, "--config", config, "--json", "--server", urls(w.nodes)}
	if yes {
		args = append(args, "--yes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bins.dispatcher, args...).CombinedOutput()
	var f sinkFootprint
	if err != nil {
		return f, fmt.Errorf("dispatcher %s: %w: %s", strings.Join(args, " "), err, out)
	}
	if err := json.Unmarshal(out, &f); err != nil {
		return f, fmt.Errorf("dispatcher %s: %w: %s", strings.Join(args, " "), err, out)
	}
	return f, nil
}

// subjectsOf lists the subjects a stream holds messages on, with counts.
func (w *world) subjectsOf(stream, filter string) map[string]uint64 {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := w.js.Stream(ctx, stream)
	if err != nil {
		w.t.Fatal(err)
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		w.t.Fatal(err)
	}
	return info.State.Subjects
}

// (j) a sink added, then removed, under load, by the documented procedure
// (docs/operations.md, "Adding and removing a sink"). Every other event
// names both sinks in destinations (chabok, crm); the rest follow the
// routes (chabok). crm is added with start: new, replica by replica; later
// taken out of every replica's config, and then `dispatcher sinks remove
// crm --yes` deletes what it left. Each event naming crm is delivered to
// crm once or dead-lettered unknown_destination once, never both; neither
// only for what the command reports it dropped (messages its consumer had
// not read or had in flight, its waiting retries: the operator's choice,
// printed by the dry run). Every event reaches chabok. After the removal
// nothing of crm is left: no consumer, no retry. The vendor fails 1
// request in 20 so that retries wait for both sinks throughout.
func TestSinkAddedAndRemovedUnderLoad(t *testing.T) {
	events, perSec := 6000, 500
	if long() {
		events = 60_000
	}
	w := newWorld(t, 1, 0, nil)
	w.vendor.set(func(l *ledger) { l.flakyEvery = 20 })
	base := w.cfg
	base.VendorURL = w.vendor.url + "/t/chabok"
	withCRM := base
	withCRM.ExtraSinks = fmt.Sprintf("  - name: crm\n    vendor: chabok\n    start: new\n    base_url: %s/t/crm/api\n    settings:\n      app_id: faults\n      access_token: %s\n",
		w.vendor.url, vendorToken)
	for i := range 2 {
		w.disps = append(w.disps, startDispatcher(t, w.dir, fmt.Sprintf("dispatcher-%d", i+1), base, urls(w.nodes)))
	}
	namesCRM := map[string]bool{}
	ids := newIDs(events)
	for i, id := range ids {
		namesCRM[id] = i%2 == 0
	}
	w.prod.shape = func(seq int) (string, []string) {
		if seq%2 == 0 {
			return "order_paid", []string{"chabok", "crm"}
		}
		return "order_paid", nil
	}
	w.prod.start(ids, perSec)

	w.waitAcked(events / 5)
	for _, d := range w.disps {
		d.reconfigure(t, withCRM)
	}
	added := time.Now()
	w.waitAcked(events * 2 / 5)
	for _, d := range w.disps {
		d.reconfigure(t, base)
	}
	// The stopped replicas' pull requests may outlive them for a while:
	// the command refuses until no one pulls.
	var removal sinkFootprint
	var refusals int
	eventually(t, 60*time.Second, "sinks remove crm --yes", func() bool {
		f, err := w.sinksRemove("crm", w.disps[0].file, true)
		if err != nil {
			refusals++
			return false
		}
		removal = f
		return true
	})
	removed := time.Now()
	t.Logf("removed crm after %d refusals: %+v", refusals, removal)
	o := w.settle(60*time.Second, added, removed)

	// crm's share, after chabok's is settled: every event naming crm is
	// delivered there or dead-lettered for it, unless the removal dropped it.
	crmIDs := []string{}
	for _, id := range ids {
		if namesCRM[id] {
			crmIDs = append(crmIDs, id)
		}
	}
	acked, ackedAt := w.prod.ackedIDs()
	account := func() (delivered, deadLettered, both, neither, neitherAfter, dups int, reasons map[string]int) {
		_ = w.dlq.update()
		snap := w.vendor.snapshotTag("crm")
		reasons = map[string]int{}
		for _, id := range acked {
			if !namesCRM[id] {
				continue
			}
			d, dl := snap[id], w.dlq.ids[id]
			if dl.sink != "crm" {
				dl = dlqEntry{}
			}
			dups += max(d.ok-1, 0) + max(dl.count-1, 0)
			switch {
			case d.ok > 0 && dl.count > 0:
				both++
			case d.ok > 0:
				delivered++
			case dl.count > 0:
				deadLettered++
				reasons[dl.reason]++
			default:
				neither++
				if ackedAt[id].After(removed) {
					neitherAfter++
				}
			}
		}
		return
	}
	// settle saw the consumers idle, so every dead letter is written;
	// a few seconds for the book to read them.
	_ = waitFor(5*time.Second, func() bool {
		_, _, _, _, after, _, _ := account()
		return after == 0
	})
	delivered, deadLettered, both, neither, neitherAfter, dups, reasons := account()

	left := w.subjectsOf(w.streamBySubject("chapar.retry.due.crm"), "chapar.retry.*.crm.>")
	for subj, n := range w.subjectsOf(w.streamBySubject("chapar.retry.due.crm"), "chapar.retry.due.crm") {
		left[subj] = n
	}
	var crmConsumers []string
	cs, err := w.consumers()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cs {
		if strings.HasSuffix(c.name, "-crm") {
			crmConsumers = append(crmConsumers, c.stream+"/"+c.name)
		}
	}
	after, err := w.sinksRemove("crm", w.disps[0].file, false)
	if err != nil {
		t.Fatal(err)
	}

	g := &goals{t: t}
	g.want(o.lost == 0, "%d events lost to chabok", o.lost)
	g.want(!o.wedged, "wedged: %v", o.stuck)
	g.want(both == 0, "%d events naming crm both delivered to it and dead-lettered", both)
	g.want(neitherAfter == 0, "%d events naming crm, acked after the removal, neither delivered nor dead-lettered", neitherAfter)
	g.want(uint64(neither-neitherAfter) <= removal.dropped(), "%d events naming crm, acked before the removal, neither delivered nor dead-lettered; the removal reported dropping %d messages", neither-neitherAfter, removal.dropped())
	g.want(deadLettered == reasons["unknown_destination"], "dead letters for crm with other reasons: %v", reasons)
	g.want(len(crmConsumers) == 0 && len(left) == 0, "crm left behind: consumers %v, retries %v", crmConsumers, left)
	g.want(len(after.Consumers) == 0 && after.Retries == 0, "sinks remove crm still finds %+v", after)
	// settle counted both sinks' answers as one event's: count chabok's
	// alone, and crm's apart.
	o.duplicates, o.deadLettered, o.both = dups, deadLettered, both
	o.lost += neitherAfter
	for _, d := range w.vendor.snapshotTag("chabok") {
		o.duplicates += max(d.ok-1, 0)
	}
	g.finish(result{
		scenario: "j. sink added and removed under load",
		load:     fmt.Sprintf("%d events at %d/s, half naming crm in destinations, 2 replicas", events, perSec),
		o:        o,
		notes: fmt.Sprintf("vendor fails 1 request in 20; crm added (start: new) and later removed by `sinks remove crm --yes` (refused %d times while pulls lingered); of %d events naming crm: %d delivered there, %d dead-lettered (%v), %d both, %d neither (the removal reported dropping %d messages: %d unread or in flight, %d retries), %d neither after it; left of crm: %d consumers, %d retries; lost counts crm's and chabok's, dead letters crm's (chabok has none), duplicates both",
			refusals, len(crmIDs), delivered, deadLettered, reasons, both, neither, removal.dropped(), removal.dropped()-removal.Retries, removal.Retries, neitherAfter, len(crmConsumers), len(left)),
	}, "")
}

// orderViolations checks per-key order at the vendor: per user, the events
// in the order the vendor first answered 2xx for each must be in the
// order JetStream stored them. An event first delivered after a later
// event of its user is a violation; a resend of one already delivered is
// at-least-once, counted apart.
func (w *world) orderViolations(users int) (violations, resent int, example string) {
	acked, _ := w.prod.ackedIDs()
	w.prod.mu.Lock()
	pos := make(map[string]uint64, len(w.prod.position))
	for k, v := range w.prod.position {
		pos[k] = v
	}
	w.prod.mu.Unlock()
	userOf := map[string]int{}
	for i, id := range w.prod.idsInOrder {
		userOf[id] = i % users
	}
	type first struct {
		at  time.Time
		pos uint64
		id  string
	}
	byUser := map[int][]first{}
	for _, id := range acked {
		d := w.vendor.event(id)
		resent += max(d.ok-1, 0)
		if d.ok > 0 {
			byUser[userOf[id]] = append(byUser[userOf[id]], first{d.firstOK, pos[id], id})
		}
	}
	for u, fs := range byUser {
		slices.SortFunc(fs, func(a, b first) int { return a.at.Compare(b.at) })
		var top uint64
		for _, f := range fs {
			if f.pos < top {
				violations++
				if example == "" {
					example = fmt.Sprintf("u%d: stream seq %d delivered after seq %d", u, f.pos, top)
				}
			}
			top = max(top, f.pos)
		}
	}
	return violations, resent, example
}

// (k) an ordered sink (order: by_user) on a three-node cluster with R3
// streams, under load, while its consumer's leader steps down again and
// again (as topology.SpreadLeaders does at every start with partitions)
// and the vendor fails one request in 10, so that some user's head is
// always being retried when the leader moves. The black-box form of
// internal/dispatch's TestOrderHoldsWhenThePinMovesDuringAHeadsRetries.
// Goals: 0 order violations per user (by stream sequence, at the vendor's
// first 2xx of each event), 0 lost.
func TestOrderedSinkStepDownsDuringRetries(t *testing.T) {
	events, perSec, stepdowns, users := 3000, 300, 4, 50
	if long() {
		events, stepdowns = 30_000, 30
	}
	w := newWorld(t, 3, 2, func(c *dispatcherConfig) { c.SinkExtra = "    order: by_user\n" })
	w.vendor.set(func(l *ledger) { l.flakyEvery = 10 })
	w.prod.users = users
	ids := newIDs(events)
	w.prod.idsInOrder = ids
	w.prod.start(ids, perSec)

	var faults []time.Time
	var refused, stalls []string
	for i := range stepdowns {
		w.waitAcked(events * (i + 1) / (stepdowns + 1))
		before := w.vendor.requests()
		subj, what := "$JS.API.CONSUMER.LEADER.STEPDOWN.CHAPAR_EVENTS.sink-chabok", "sink-chabok"
		if i%4 == 3 {
			subj, what = "$JS.API.STREAM.LEADER.STEPDOWN.CHAPAR_EVENTS", "CHAPAR_EVENTS"
		}
		if err := w.stepDown(subj); err != nil {
			refused = append(refused, fmt.Sprintf("%s: %v", what, err))
		}
		faults = append(faults, time.Now())
		if waitFor(10*time.Second, func() bool { return w.vendor.requests() > before+50 }) != nil {
			stalls = append(stalls, what)
		}
	}
	o := w.settle(60*time.Second, faults...)
	violations, resent, example := w.orderViolations(users)

	g := &goals{t: t}
	g.want(violations == 0, "%d order violations (%s)", violations, example)
	g.want(o.lost == 0, "%d events lost", o.lost)
	g.want(!o.wedged, "wedged: %v", o.stuck)
	g.want(o.deadLettered+o.both == 0, "%d dead letters with a vendor that fails 1 in 10", o.deadLettered+o.both)
	g.want(len(refused) == 0, "step-downs refused: %v", refused)
	notes := fmt.Sprintf("order: by_user over %d users; vendor fails 1 request in 10 (503); %d step-downs of sink-chabok's leader (every 4th of CHAPAR_EVENTS'); %d order violations; %d resent (at-least-once)",
		users, stepdowns, violations, resent)
	if len(stalls) > 0 {
		notes += fmt.Sprintf("; deliveries stalled >10 s after: %v", stalls)
	}
	g.finish(result{
		scenario: "k. ordered sink: step-downs during retries",
		load:     fmt.Sprintf("%d events at %d/s, 3 nodes, 2 replicas", events, perSec),
		o:        o,
		notes:    notes,
	}, "")
}
