package faults

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// (b) kill -9 of the only nats-server (file store) mid-load, restarted on
// the same store after a pause. Producers retry; the dispatcher reconnects.
func TestNATSRestart(t *testing.T) {
	events, perSec, down := 3000, 1000, 2*time.Second
	if long() {
		events, down = 30_000, 10*time.Second
	}
	w := newWorld(t, 1, 1, nil)
	w.prod.start(newIDs(events), perSec)
	w.waitAcked(events / 3)
	w.nodes[0].kill()
	time.Sleep(down) // the outage's length, not a synchronisation
	w.nodes[0].restart(t)
	healed := time.Now()
	o := w.settle(30*time.Second, healed)
	resumed := w.vendor.firstOKAfter(healed).Sub(healed)

	g := &goals{t: t}
	g.want(o.lost == 0, "%d events lost", o.lost)
	g.want(!o.wedged, "wedged: %v", o.stuck)
	g.want(o.deadLettered+o.both == 0, "%d dead letters with a healthy vendor", o.deadLettered+o.both)
	g.finish(result{
		scenario: "b. restart the nats-server",
		load:     fmt.Sprintf("%d events at %d/s, 1 replica", events, perSec),
		o:        o,
		notes: fmt.Sprintf("kill -9, down %s, same store; deliveries resumed %s after the restart; producer retried %d publishes; recovery from the restart",
			down, fmtDur(resumed), w.prod.retries),
	}, "")
}

// (c) a three-node cluster with R3 streams: kill -9 the events stream's
// leader, then leader step-downs of every stream and consumer in turn,
// under load, with a vendor that fails one request in 20 so that retries
// are in flight. Streams and consumers are found through the JetStream API.
// Goal: nothing lost, and every consumer's pending work drains (no wedge).
func TestClusterLeaderChanges(t *testing.T) {
	events, perSec, stepdowns := 4000, 500, 4
	if long() {
		events, stepdowns = 40_000, 10
	}
	w := newWorld(t, 3, 2, nil)
	// One request in 20 fails (503), so retries (delayed naks) are always
	// pending when leaders change.
	w.vendor.set(func(l *ledger) { l.flakyEvery = 20 })
	w.prod.start(newIDs(events), perSec)
	phase := func(i int) int { return events * (i + 1) / (stepdowns + 3) }

	// Kill the leader of the stream producers publish to.
	w.waitAcked(phase(0))
	events0 := w.streamBySubject(eventsSubjectsP)
	leader := w.streamLeader(events0)
	node := w.node(leader)
	node.kill()
	faults := []time.Time{time.Now()}
	eventually(t, 30*time.Second, "a new leader of "+events0, func() bool {
		l := w.streamLeader(events0)
		return l != "" && l != leader
	})
	w.waitAcked(phase(1))
	node.restart(t)
	t.Logf("killed %s, leader of %s; restarted it", leader, events0)

	// Step-downs, alternating streams and consumers.
	var stalls, refused []string
	for i := range stepdowns {
		w.waitAcked(phase(2 + i))
		before := w.vendor.requests()
		var subj, what string
		if i%2 == 0 {
			streams := w.streamNames()
			s := streams[(i/2)%len(streams)]
			subj, what = "$JS.API.STREAM.LEADER.STEPDOWN."+s, "stream "+s
		} else {
			cs, _ := w.consumers()
			c := cs[(i/2)%len(cs)]
			subj, what = fmt.Sprintf("$JS.API.CONSUMER.LEADER.STEPDOWN.%s.%s", c.stream, c.name), "consumer "+c.stream+"/"+c.name
		}
		if err := w.stepDown(subj); err != nil {
			refused = append(refused, fmt.Sprintf("%s: %v", what, err))
		}
		faults = append(faults, time.Now())
		// Under load, deliveries must resume within a few seconds.
		if waitFor(10*time.Second, func() bool { return w.vendor.requests() > before+50 }) != nil {
			stalls = append(stalls, what)
		}
		t.Logf("step-down %d: %s", i+1, what)
	}
	o := w.settle(30*time.Second, faults...)

	g := &goals{t: t}
	g.want(o.lost == 0, "%d events lost", o.lost)
	g.want(!o.wedged, "wedged: %v", o.stuck)
	g.want(o.deadLettered+o.both == 0, "%d dead letters with a healthy vendor", o.deadLettered+o.both)
	notes := fmt.Sprintf("vendor fails 1 request in 20 (503); killed the leader of %s (%s), then %d step-downs", events0, leader, stepdowns)
	if len(stalls) > 0 {
		notes += fmt.Sprintf("; deliveries stalled >10 s after: %v", stalls)
	}
	if len(refused) > 0 {
		notes += fmt.Sprintf("; step-downs refused: %v", refused)
	}
	g.finish(result{
		scenario: "c. R3 cluster: leader kill and step-downs",
		load:     fmt.Sprintf("%d events at %d/s, 3 nodes, 2 replicas", events, perSec),
		o:        o,
		notes:    notes,
	}, "")
}

// streamNames lists the streams, sorted.
func (w *world) streamNames() []string {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []string
	l := w.js.StreamNames(ctx)
	for n := range l.Name() {
		out = append(out, n)
	}
	if err := l.Err(); err != nil {
		w.t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// streamBySubject names the stream that captures subject.
func (w *world) streamBySubject(subject string) string {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	name, err := w.js.StreamNameBySubject(ctx, subject)
	if err != nil {
		w.t.Fatal(err)
	}
	return name
}

// streamLeader names the node leading stream ("" while none is).
func (w *world) streamLeader(stream string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := w.js.Stream(ctx, stream)
	if err != nil {
		return ""
	}
	info, err := s.Info(ctx)
	if err != nil || info.Cluster == nil {
		return ""
	}
	return info.Cluster.Leader
}

func (w *world) node(name string) *natsNode {
	w.t.Helper()
	for _, n := range w.nodes {
		if n.name == name {
			return n
		}
	}
	w.t.Fatalf("no node named %q", name)
	return nil
}

// stepDown sends a JetStream leader step-down request, retrying while the
// asset has no leader to step down.
func (w *world) stepDown(subject string) error {
	var last error
	for range 20 {
		resp, err := w.nc.Request(subject, nil, 3*time.Second)
		if err == nil {
			var r struct {
				Success bool                `json:"success"`
				Error   *jetstream.APIError `json:"error"`
			}
			if err = json.Unmarshal(resp.Data, &r); err == nil {
				if r.Success {
					return nil
				}
				err = fmt.Errorf("%v", r.Error)
			}
		}
		last = err
		time.Sleep(250 * time.Millisecond) // pace the retries
	}
	return last
}
