package dispatch_test

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
)

// throttleWindows reads a vendor's requests as the Retry-After windows it
// gave: each 429 (answered with Retry-After: ra) opens one. It returns
// how many requests arrived inside the first window (the storm's start:
// requests already in flight when it began are not the deployment's to
// hold back) and inside the later ones, and a line per probe round, until
// the first request answered otherwise after the windows.
func throttleWindows(reqs []emulator.Request, ra time.Duration) (inFirst, early int, rounds []string) {
	slices.SortFunc(reqs, func(a, b emulator.Request) int { return a.At.Compare(b.At) })
	var first, firstEnd, open time.Time // the first 429, its window's end, the latest window's end
	for _, r := range reqs {
		switch {
		case first.IsZero() && r.Status == 429:
			first, firstEnd = r.At, r.At.Add(ra)
			rounds = append(rounds, "first 429")
		case first.IsZero():
		case r.At.Before(firstEnd):
			inFirst++
		case r.At.Before(open):
			early++
			rounds[len(rounds)-1] += fmt.Sprintf(" +%s:%d(early)", r.At.Sub(first).Round(time.Millisecond), r.Status)
		case r.Status != 429:
			return inFirst, early, rounds // the storm is over
		default:
			rounds = append(rounds, fmt.Sprintf("at %s: %d", r.At.Sub(first).Round(time.Millisecond), r.Status))
		}
		if r.Status == 429 && r.At.Add(ra).After(open) {
			open = r.At.Add(ra)
		}
	}
	return inFirst, early, rounds
}

// Issue 18: a Retry-After pauses the sink in every replica, and after each
// pause the deployment sends one probe. Three dispatchers, each with its
// own connection, against a vendor that answers everything with 429 and
// Retry-After: 1 for three seconds: no request reaches the vendor inside a
// window it had given any replica, each window is followed by one probe,
// and every event is delivered once the storm ends. Before the pause was
// shared, each replica honoured only its own 429s: 2 of 3 probes after
// every window arrived inside the window the first had just been given.
func TestRetryAfterPausesEveryReplica(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 429, RetryAfter: "1"})
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	for range 3 {
		e.Start([]config.Sink{sink}, routes)
	}
	ids := publishTracks(t, e, 60, "order_paid")
	// The storm lasts until three windows have followed the first.
	testenv.Eventually(t, 20*time.Second, "a 3 s storm", func() bool {
		var first, last time.Time
		for _, r := range vendor.Requests() {
			if r.Status == 429 {
				if first.IsZero() {
					first = r.At
				}
				last = r.At
			}
		}
		return !first.IsZero() && last.Sub(first) >= 3*time.Second
	})
	vendor.ClearFault()
	testenv.Eventually(t, 30*time.Second, "every event delivered after the storm", allDelivered(t, e, ids))

	inFirst, early, rounds := throttleWindows(vendor.Requests(), time.Second)
	t.Logf("%d more requests answered in the first window (in flight when the storm began); then %s", inFirst, strings.Join(rounds, "; "))
	if early > 0 {
		t.Errorf("%d requests reached the vendor inside a Retry-After window it had given a replica", early)
	}
	if len(rounds) < 4 { // the first 429 and a probe after each window
		t.Errorf("%d probe rounds, want one after each of at least 3 windows", len(rounds))
	}
}

// Issue 18: a replica that starts during a pause learns it before it
// sends anything.
func TestAReplicaStartedDuringAPauseHonoursIt(t *testing.T) {
	t.Parallel() // waits out Retry-After; a loaded machine only sends later, which the lower bound allows
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 429, RetryAfter: "2", Count: 1})
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	e.Start([]config.Sink{sink}, routes)
	ids := publishTracks(t, e, 1, "order_paid")
	testenv.Eventually(t, 10*time.Second, "the 429 shared", func() bool {
		kv, err := e.JS.KeyValue(context.Background(), e.Topo.PausesBucket())
		if err != nil {
			return false
		}
		_, err = kv.Get(context.Background(), "gateway")
		return err == nil
	})
	e.Start([]config.Sink{sink}, routes)
	ids = append(ids, publishTracks(t, e, 10, "order_paid")...)
	testenv.Eventually(t, 20*time.Second, "every event delivered", allDelivered(t, e, ids))

	var throttled time.Time
	for _, r := range vendor.Requests() {
		if r.Status == 429 {
			throttled = r.At
			continue
		}
		if r.At.Before(throttled.Add(2 * time.Second)) {
			t.Errorf("request %s after the 429 that asked for 2 s", r.At.Sub(throttled).Round(time.Millisecond))
		}
	}
}

// A pause does not depend on the broker: with the pauses bucket deleted
// under a running dispatcher, a Retry-After still pauses it (its own
// pause), it delivers after, and the bucket is made again.
func TestRetryAfterHonouredWhileThePausesBucketIsGone(t *testing.T) {
	t.Parallel() // waits out Retry-After; a loaded machine only sends later, which the lower bound allows
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 1 // no request in flight beside the throttled one
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	e.Start([]config.Sink{sink}, routes)
	if err := e.JS.DeleteKeyValue(context.Background(), e.Topo.PausesBucket()); err != nil {
		t.Fatal(err)
	}
	vendor.SetFault(emulator.Fault{Status: 429, RetryAfter: "2", Count: 1})
	ids := publishTracks(t, e, 10, "order_paid")
	testenv.Eventually(t, 20*time.Second, "every event delivered", allDelivered(t, e, ids))
	var throttled time.Time
	for _, r := range vendor.Requests() {
		if r.Status == 429 {
			throttled = r.At
			continue
		}
		if !throttled.IsZero() && r.At.Before(throttled.Add(2*time.Second)) {
			t.Errorf("request %s after the 429 that asked for 2 s", r.At.Sub(throttled).Round(time.Millisecond))
		}
	}
	if throttled.IsZero() {
		t.Fatal("no 429 was served")
	}
	testenv.Eventually(t, 10*time.Second, "the bucket made again", func() bool {
		_, err := e.JS.KeyValue(context.Background(), e.Topo.PausesBucket())
		return err == nil
	})
}
