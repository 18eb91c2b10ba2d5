package faults

import (
	"fmt"
	"testing"
	"time"
)

// (a) kill -9 of one of two dispatcher replicas, again and again, under
// load. The killed replica is restarted at once, as a supervisor would. Its
// in-flight work must move to the other replica after ack_wait: nothing is
// lost, and only deliveries in flight at a kill may repeat.
func TestKillDispatcherReplica(t *testing.T) {
	events, kills, perSec := 5000, 2, 1000
	if long() {
		events, kills = 100_000, 5
	}
	w := newWorld(t, 1, 2, nil)
	w.prod.start(newIDs(events), perSec)

	var faults []time.Time
	for k := range kills {
		w.waitAcked(events * (k + 1) / (kills + 1))
		d := w.disps[k%len(w.disps)]
		d.kill()
		faults = append(faults, time.Now())
		d.restart(t)
	}
	o := w.settle(30*time.Second, faults...)

	g := &goals{t: t}
	g.want(o.lost == 0, "%d events lost", o.lost)
	g.want(!o.wedged, "wedged: %v", o.stuck)
	g.want(o.deadLettered+o.both == 0, "%d dead letters with a healthy vendor", o.deadLettered+o.both)
	inFlight := kills * w.cfg.Concurrency
	g.want(o.duplicates <= inFlight, "%d duplicates; at most %d deliveries were in flight at the kills", o.duplicates, inFlight)
	g.finish(result{
		scenario: "a. kill -9 a dispatcher replica",
		load:     fmt.Sprintf("%d events at %d/s, 2 replicas, %d kills", events, perSec, kills),
		o:        o,
		notes:    fmt.Sprintf("ack_wait %s; recovery: from a kill until every event acked before it is settled", w.cfg.AckWait),
	}, "")
}
