package main

import (
	"context"
	"testing"
	"time"
)

// The retry storm, quick: every event fails once at the vendor, waits as
// a scheduled retry, falls due while nats-server is frozen, and reaches
// the vendor accepted exactly once (the probes too); the figures are
// there. No timing is asserted.
func TestQuickRetryStormDeliversEveryRetryExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the dispatcher")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	const n = 200
	results, err := runBench(ctx, options{quick: true, events: n, systems: []string{"chapar"}, scenarios: []string{retryStormName}, progress: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 1 {
		t.Fatalf("%d results for one scenario", len(results))
	}
	r := results[0]
	if r.err != nil {
		t.Fatal(r.err)
	}
	f := r.storm
	if f == nil || len(f.late) != n || f.moved <= 0 || f.frozen <= 0 || len(f.before) == 0 || f.rssN == 0 || f.retriesBytes == 0 {
		t.Fatalf("figures missing: %+v", f)
	}
}
