package main

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/embedded"
)

func TestMain(m *testing.M) {
	// The bench starts nats-server as a copy of its own executable: here,
	// this test binary.
	if isNATSHelper() {
		os.Exit(embedded.ServerMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// The quick mode of the bench, Chapar only (the peers' module stays out of
// this module's tests): every scenario, and one scale-out scenario (a
// 3-node cluster, 2 replicas, 3 partitions), a few hundred events, each of
// which must reach the vendor exactly once. No timing is asserted.
func TestQuickChaparDeliversEveryEventExactlyOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the dispatcher")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	names := append(append(append(slices.Clone(scenarioNames), "scale-r2-p3"), batching...), "ksinks4")
	results, err := runBench(ctx, options{quick: true, events: 200, systems: []string{"chapar"}, scenarios: names, progress: testLog{t}})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != len(names) {
		t.Fatalf("%d results for %d scenarios", len(results), len(names))
	}
	for _, r := range results {
		if r.err != nil {
			t.Errorf("%s: %v", r.scenario, r.err)
		}
		if r.perSec <= 0 || r.rss == 0 {
			t.Errorf("%s: no figures: %+v", r.scenario, r)
		}
	}
}

type testLog struct{ t *testing.T }

func (l testLog) Write(b []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// The check that decides a run: what it reports for each way delivery can
// go wrong.
func TestCheckExactlyOnce(t *testing.T) {
	ok := func(sink, seq int) receipt { return receipt{sink: sink, seq: seq, ok: true, status: http.StatusOK} }
	want := expected{events: 3, probes: 1}
	all := []receipt{ok(0, -1), ok(0, 0), ok(0, 1), ok(0, 2), ok(1, -1), ok(1, 0), ok(1, 1), ok(1, 2)}
	if err := checkExactlyOnce(all, 2, want); err != nil {
		t.Fatalf("all delivered once: %v", err)
	}
	for name, tc := range map[string]struct {
		recs []receipt
		want string
	}{
		"missing":    {all[:7], "sink 1: 1 events never arrived (e.g. [2])"},
		"duplicate":  {append(all[:8:8], ok(0, 1)), "sink 0: 1 events arrived more than once (e.g. [1])"},
		"unexpected": {append(all[:8:8], ok(1, 7)), "sink 1: event 7 was never published"},
		"rejected":   {append(all[:8:8], receipt{sink: 0, seq: 0, ok: true, status: 400}), "event 0 answered 400"},
		"foreign":    {append(all[:8:8], receipt{sink: 0, status: 200}), "carries no bench event"},
	} {
		err := checkExactlyOnce(tc.recs, 2, want)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
		if complete(tc.recs, 2, want) != (name != "missing") {
			t.Errorf("%s: complete = %v", name, !(name != "missing"))
		}
	}
}

// A split scenario: each event at one sink (seq mod sinks), every probe at
// each.
func TestCheckExactlyOnceSplit(t *testing.T) {
	ok := func(sink, seq int) receipt { return receipt{sink: sink, seq: seq, ok: true, status: http.StatusOK} }
	want := expected{events: 4, probes: 1, split: 2}
	all := []receipt{ok(0, -1), ok(1, -1), ok(0, 0), ok(1, 1), ok(0, 2), ok(1, 3)}
	if err := checkExactlyOnce(all, 2, want); err != nil || !complete(all, 2, want) {
		t.Fatalf("all delivered once: %v", err)
	}
	if n := want.receipts(2); n != len(all) {
		t.Errorf("receipts(2) = %d, want %d", n, len(all))
	}
	for name, tc := range map[string]struct {
		recs []receipt
		want string
	}{
		"missing":       {all[:5], "sink 1: 1 events never arrived (e.g. [3])"},
		"at both sinks": {append(all[:6:6], ok(1, 2)), "sink 1: event 2 is routed to another sink"},
	} {
		if err := checkExactlyOnce(tc.recs, 2, want); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got %v, want %q", name, err, tc.want)
		}
	}
}

func TestSpanCountsFromTheFirstRequest(t *testing.T) {
	t0 := time.Now()
	recs := []receipt{
		{seq: -1, ok: true, at: t0},
		{seq: 0, ok: true, at: t0.Add(time.Second)},
		{seq: 1, ok: true, at: t0.Add(2 * time.Second)},
	}
	if d, n := span(recs, 50*time.Millisecond); d != time.Second+50*time.Millisecond || n != 2 {
		t.Errorf("span = %s over %d", d, n)
	}
}

// The retention table compares Chapar as built (limits) with
// chapar-interest in each scenario both ran, with the disk per million
// events from what the streams hold after delivery; without
// chapar-interest it is left out.
func TestRetentionReport(t *testing.T) {
	sc := scenario{name: "backlog16", title: "backlog", events: 1000}
	limits := result{system: "chapar", scenario: "backlog16", events: 1000, perSec: 2000,
		natsCPU: 40 * time.Millisecond, sysCPU: 100 * time.Millisecond, streamMsgs: 1000, streamBytes: 500 << 10}
	interest := result{system: "chapar-interest", scenario: "backlog16", events: 1000, perSec: 1800,
		natsCPU: 50 * time.Millisecond, sysCPU: 100 * time.Millisecond}
	var b strings.Builder
	writeReport(&b, "bench", 0, []scenario{sc}, []result{limits, interest})
	for _, want := range []string{
		"| backlog16 | limits | 2000 | 0.040 | 0.100 | 1000 | 0.5 | 488 |",
		"| backlog16 | interest | 1800 | 0.050 | 0.100 | 0 | 0.0 | – |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	writeReport(&b, "bench", 0, []scenario{sc}, []result{limits})
	if strings.Contains(b.String(), "Retention") {
		t.Errorf("a retention table without chapar-interest:\n%s", b.String())
	}
}

// The ceilings' table sets each system's throughput beside the lower of
// the two ceilings measured in the same run, as a share of it; latency
// rows show the values without a share, and nats-server CPU is not the
// HTTP ceiling's (it has no NATS).
func TestCeilingsReport(t *testing.T) {
	sc := scenario{name: "backlog16", title: "backlog", events: 1000}
	res := func(sys string, perSec float64) result {
		return result{system: sys, scenario: "backlog16", events: 1000, perSec: perSec,
			sysCPU: 100 * time.Millisecond, natsCPU: 20 * time.Millisecond}
	}
	results := []result{res("chapar", 8000), res("lean", 10000), res(jsCeiling, 50000), res(httpCeiling, 16000)}
	var b strings.Builder
	writeReport(&b, "bench", 0, []scenario{sc}, results)
	for _, want := range []string{
		"| backlog16 (lower: http-ceiling) | events/s | 50000 | 16000 | 8000 | – | 10000 | 50.0% | – | 62.5% | 0.80× | – |",
		"|  | nats-server CPU-s / 1k events | 0.020 | – | 0.020 | – | 0.020 |  |  |  | 1.00× | – |",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	writeReport(&b, "bench", 0, []scenario{sc}, results[:2])
	if strings.Contains(b.String(), "Ceilings") {
		t.Errorf("a ceilings table without ceilings:\n%s", b.String())
	}
}

// The js-ceiling's receipts (one line per ack) are judged as the vendor's
// are: an event acked twice is a duplicate.
func TestJSCeilingReceiptsAreJudgedExactlyOnce(t *testing.T) {
	path := t.TempDir() + "/receipts-1.txt"
	if err := os.WriteFile(path, []byte("0 -1 1 2\n0 0 10 20\n0 1 11 21\n0 1 11 22\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	recs, err := readReceipts(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 4 || recs[1].at.Sub(recs[1].sent) != 10 {
		t.Fatalf("receipts: %+v", recs)
	}
	want := expected{events: 2, probes: 1}
	if err := checkExactlyOnce(recs[:3], 1, want); err != nil {
		t.Errorf("each acked once: %v", err)
	}
	if err := checkExactlyOnce(recs, 1, want); err == nil || !strings.Contains(err.Error(), "more than once") {
		t.Errorf("an event acked twice: %v", err)
	}
}

// A measurement taken again (wait-idle: another workload disturbed it)
// starts from an empty directory: nats-server on the first attempt's
// store would hold its events and consumers too, and the second attempt
// would measure a stream twice as large (peak RSS 11–17 MiB higher in
// every batching run measured again, issue 20).
func TestAMeasurementAgainStartsFromAnEmptyDirectory(t *testing.T) {
	work := t.TempDir()
	dir, err := measureDir(work, "bulk-metrix-chapar")
	if err != nil {
		t.Fatal(err)
	}
	left := filepath.Join(dir, "jetstream", "stream.dat")
	if err := os.MkdirAll(filepath.Dir(left), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(left, []byte("the first attempt's store"), 0o644); err != nil {
		t.Fatal(err)
	}
	again, err := measureDir(work, "bulk-metrix-chapar")
	if err != nil {
		t.Fatal(err)
	}
	if again != dir {
		t.Fatalf("measured again in %s, first in %s", again, dir)
	}
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Errorf("the first attempt's store is still there for the second (%v)", err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Errorf("no directory to measure in: %v", err)
	}
}
