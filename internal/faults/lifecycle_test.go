package faults

// Lifecycle scenarios (issue 19, "nothing lost when the deployment
// changes"): the deployment changes under load, as operators change it:
// a consumer deleted by mistake, a rolling deploy that widens a sink's
// routes, a sink added and then removed by command, consumer leaders
// stepping down while an ordered sink retries. Every acked event is
// accounted for at the vendor ledger, as in the other scenarios.

import (
	"context"
	"errors"
	"fmt"
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

var _ = errors.Is
var _ jetstream.JetStream
