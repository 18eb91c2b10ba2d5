package main

// The retry storm (-scenarios retrystorm; not in the default run): N
// retries due at once after an outage. What it answers (issue 20): how
// late nats-server's message schedules fire when N are due in one sweep,
// whether that sweep stalls publishes to the events stream, and what a
// waiting retry costs nats-server in memory.
//
// As separate processes, end to end: nats-server, the dispatcher, and the
// Chabok emulator in this process.
//
//  1. The vendor answers 503. N events are published; the dispatcher fails
//     each once and stores its retry, due a fixed delay later (a retry
//     policy with multiplier 1 and no jitter; the breaker never opens), so
//     every retry waits in CHAPAR_RETRIES. nats-server's RSS is read before
//     and now: the memory per waiting retry.
//  2. The vendor recovers. nats-server is frozen (SIGSTOP) until the last
//     retry is due, then resumed: every retry is due at that instant, as
//     after an outage of the broker, and the server's first sweep finds
//     all N. (Without the freeze the retries would fall due at the rate the
//     dispatcher failed them, a few thousand a second, never N at once.)
//  3. From the resumption a probe publishes to the events stream 100 times
//     a second, one publish at a time, and records each ack's latency; the
//     bench reads the retries stream's last sequence to see when the
//     server has moved every retry to its due subject.
//
// Reported: when the server had moved every retry (the sweep's lateness),
// each retry's lateness at the vendor (its receipt less when it became
// due: the later of its scheduled time and the resumption; the scheduled
// time is the vendor's 503 for it plus the fixed delay, which the
// dispatcher sets a few milliseconds after the 503, so lateness is
// overstated by that), p50/p99/max, the probe's publish latency before the
// freeze, during the sweep and while the retries drain, and the RSS per
// million waiting retries. Every event must reach the vendor accepted
// exactly once, having failed exactly once.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/emulator"
)

const retryStormName = "retrystorm"

// stormProbeEvery is the probe publisher's period: 100 publishes a second.
const stormProbeEvery = 10 * time.Millisecond

// stormFigures are the retry storm's own figures.
type stormFigures struct {
	delay time.Duration // the retry policy's fixed delay
	// failSpan is from the first 503 to the last: how the retries' due
	// times spread before the freeze made them one instant.
	failSpan time.Duration
	frozen   time.Duration // how long nats-server was stopped
	// rss0 and rssN are nats-server's resident set with no retry waiting
	// and with every retry waiting, just stored; rssRest with every retry
	// waiting after stormRest (the store's block caches have expired);
	// retriesBytes what the retries stream holds then.
	rss0, rssN   uint64
	rssRest      uint64
	retriesBytes uint64
	// moved is when the server had moved every retry to its due subject,
	// after the resumption (its own clock: the last message's timestamp);
	// fired when it had moved 1%, 50% and 99% of them.
	moved time.Duration
	fired []time.Duration
	// late is each retry's lateness at the vendor, sorted.
	late []time.Duration
	// Probe publish → ack latencies, sorted: before the freeze (every
	// retry waiting, nothing due), during the sweep (resumption to moved),
	// and while the retries drain (moved to the last retry's receipt).
	before, sweep, drain []time.Duration
}

// perMillion scales the RSS rss, with every retry waiting, less the RSS
// with none, to a million waiting retries, in MiB.
func (f *stormFigures) perMillion(rss uint64) float64 {
	if f == nil || len(f.late) == 0 || rss < f.rss0 {
		return nan()
	}
	return mib(rss-f.rss0) / float64(len(f.late)) * 1e6
}

// stormRest is how long the retries wait, idle, before nats-server's RSS
// is read again: past the file store's block cache expiry (10 s), so what
// stays is what a waiting retry costs, not the cache of what was written.
const stormRest = 12 * time.Second

// stormDelay is the fixed retry delay: long enough that the dispatcher
// has failed every event before the first retry is due (it fails a few
// thousand a second on a busy 2-core machine), short enough that the
// freeze stays short.
func stormDelay(events int) time.Duration {
	return 3*time.Second + stormRest + time.Duration(events)*500*time.Microsecond
}

// measureRetryStorm runs the retry storm with Chapar (the peers have no
// scheduled retries).
func (h *harness) measureRetryStorm(ctx context.Context, sys system, sc scenario) (res result) {
	fig := &stormFigures{delay: stormDelay(sc.events)}
	res = result{system: sys.name, scenario: sc.name, events: sc.events, deliveries: sc.events, storm: fig}
	dir := filepath.Join(h.work, sc.name+"-"+sys.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		res.err = err
		return res
	}
	ns, err := startNATS(h.self, dir, 1)
	if err != nil {
		res.err = err
		return res
	}
	natsPID := ns.pids()[0]
	defer func() {
		_ = syscall.Kill(natsPID, syscall.SIGCONT) // never leave it frozen
		if err := ns.stop(10 * time.Second); err != nil && res.err == nil {
			res.err = err
		}
	}()
	nc, err := nats.Connect(ns.url, nats.Name("bench-publisher"))
	if err != nil {
		res.err = err
		return res
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1000))
	if err != nil {
		res.err = err
		return res
	}
	vs := h.vendors.prepare(1, 0)
	vendor := vs[0]
	pub := publisher{js: js, subject: func(key string) string { return sys.subject(key, 1) }}

	p, err := startChaparStorm(filepath.Join(h.bin, "dispatcher"), ns.url, vendor.url, sc, fig.delay, dir)
	if err != nil {
		res.err = err
		return res
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = p.stop(30 * time.Second)
		}
	}()
	if err := pub.probe(ctx, -1); err != nil {
		res.err = err
		return res
	}
	if err := vs.await(ctx, expected{probes: 1}, p, 30*time.Second); err != nil {
		res.err = fmt.Errorf("first probe: %w", err)
		return res
	}
	retries, err := js.Stream(ctx, "CHAPAR_RETRIES")
	if err != nil {
		res.err = fmt.Errorf("the retries stream: %w", err)
		return res
	}
	if fig.rss0, err = currentRSS(natsPID); err != nil {
		res.err = err
		return res
	}

	// 1. Every event fails once and waits as a scheduled retry.
	natsUse, err := startUsage(natsPID)
	if err != nil {
		res.err = err
		return res
	}
	sysUse, err := startUsage(p.pid())
	if err != nil {
		res.err = err
		return res
	}
	noise, err := startNoise()
	if err != nil {
		res.err = err
		return res
	}
	vendor.chabok.SetFault(emulator.Fault{Status: http.StatusServiceUnavailable})
	h.log("  %d events published; the vendor answers 503; each retry is due %s after its failure", sc.events, fig.delay)
	if err := pub.backlog(ctx, sc.events); err != nil {
		res.err = err
		return res
	}
	info, err := awaitWaiting(ctx, retries, vs, sc.events, p)
	if err != nil {
		res.err = err
		return res
	}
	vendor.chabok.ClearFault()
	firstFail, lastFail := failTimes(vs.receipts())
	fig.failSpan = lastFail.Sub(firstFail)
	fig.retriesBytes = info.State.Bytes
	if fig.rssN, err = currentRSS(natsPID); err != nil {
		res.err = err
		return res
	}
	h.log("  %d retries waiting (%.1f MiB in the stream), failed over %s; nats-server RSS %.1f → %.1f MiB",
		info.State.Msgs, mib(info.State.Bytes), fig.failSpan.Round(time.Millisecond), mib(fig.rss0), mib(fig.rssN))

	select {
	case <-ctx.Done():
		res.err = ctx.Err()
		return res
	case <-time.After(stormRest):
	}
	if fig.rssRest, err = currentRSS(natsPID); err != nil {
		res.err = err
		return res
	}
	h.log("  nats-server RSS after %s at rest: %.1f MiB", stormRest, mib(fig.rssRest))
	// The probe's baseline: every retry waiting, none due.
	probes := &stormProbe{js: js, subject: pub.subject, next: -2}
	if fig.before, err = probes.run(ctx, time.Second, nil); err != nil {
		res.err = err
		return res
	}
	if time.Now().Add(200 * time.Millisecond).After(firstFail.Add(fig.delay)) {
		res.err = fmt.Errorf("the first retry fell due before nats-server could be frozen (failing %d events took %s, the delay is %s): the dispatcher failed them too slowly for this delay",
			sc.events, fig.failSpan.Round(time.Millisecond), fig.delay)
		return res
	}

	// 2. Frozen until the last retry is due, then every one is due at once.
	l0 := info.State.LastSeq
	if err := syscall.Kill(natsPID, syscall.SIGSTOP); err != nil {
		res.err = fmt.Errorf("freeze nats-server: %w", err)
		return res
	}
	frozenAt := time.Now()
	select {
	case <-ctx.Done():
		res.err = ctx.Err()
		return res
	case <-time.After(time.Until(lastFail.Add(fig.delay + 100*time.Millisecond))):
	}
	if err := syscall.Kill(natsPID, syscall.SIGCONT); err != nil {
		res.err = fmt.Errorf("resume nats-server: %w", err)
		return res
	}
	resumed := time.Now()
	fig.frozen = resumed.Sub(frozenAt)

	// 3. The sweep, the probe beside it, and the drain.
	type sweepResult struct {
		samples []movedSample
		err     error
	}
	swept := make(chan sweepResult, 1)
	go func() {
		samples, err := awaitMoved(ctx, retries, l0, uint64(sc.events))
		swept <- sweepResult{samples, err}
	}()
	type probeResult struct {
		lat []stormSample
		err error
	}
	probeDone, stopProbe := make(chan probeResult, 1), make(chan struct{})
	go func() {
		lat, err := probes.samples(ctx, 10*time.Minute, stopProbe)
		probeDone <- probeResult{lat, err}
	}()
	sw := <-swept
	if sw.err != nil {
		close(stopProbe)
		<-probeDone
		res.err = sw.err
		return res
	}
	movedAt := sw.samples[len(sw.samples)-1].at
	fig.moved = movedAt.Sub(resumed)
	for _, q := range []float64{0.01, 0.5, 0.99} {
		fig.fired = append(fig.fired, firedBy(sw.samples, uint64(sc.events), q, resumed))
	}
	h.log("  nats-server moved every retry to its due subject %s after the resumption (frozen %s)",
		fig.moved.Round(time.Millisecond), fig.frozen.Round(time.Millisecond))
	want := expected{events: sc.events, probes: 1}
	if err := awaitAccepted(ctx, vs, want, p); err != nil {
		close(stopProbe)
		<-probeDone
		res.err = err
		return res
	}
	close(stopProbe)
	pr := <-probeDone
	if pr.err != nil {
		res.err = pr.err
		return res
	}
	// The probes are events too: each must arrive exactly once.
	want.probes = 1 + probes.published()
	if err := awaitAccepted(ctx, vs, want, p); err != nil {
		res.err = err
		return res
	}
	if res.sysCPU, err = sysUse.since(); err != nil {
		res.err = err
		return res
	}
	if res.natsCPU, err = natsUse.since(); err != nil {
		res.err = err
		return res
	}
	if res.rss, err = peakRSS(p.pid()); err != nil {
		res.err = err
		return res
	}
	if res.otherCPU, res.window, err = noise.since(res.sysCPU + res.natsCPU); err != nil {
		res.err = err
		return res
	}
	stopped = true
	if err := p.stop(30 * time.Second); err != nil {
		res.err = err
		return res
	}

	recs := vs.receipts()
	var accepted []receipt
	failed := map[int]int{}
	for _, r := range recs {
		if r.ok && r.status == http.StatusServiceUnavailable {
			failed[r.seq]++
			continue
		}
		accepted = append(accepted, r)
	}
	if err := checkExactlyOnce(accepted, 1, want); err != nil {
		res.err = err
		return res
	}
	for seq := range sc.events {
		if failed[seq] != 1 {
			res.err = fmt.Errorf("event %d failed %d times: every event must fail exactly once, then be retried once", seq, failed[seq])
			return res
		}
	}
	fig.late, res.lat = lateness(recs, fig.delay, resumed)
	var lastRetry time.Time
	for _, r := range accepted {
		if r.seq >= 0 && r.at.After(lastRetry) {
			lastRetry = r.at
		}
	}
	took, n := span(accepted, 0)
	if took > 0 {
		res.perSec = float64(n) / took.Seconds()
	}
	fig.sweep, fig.drain = splitSamples(pr.lat, resumed, movedAt, lastRetry)
	return res
}

// startChaparStorm runs the dispatcher with one Chabok sink whose retries
// wait exactly delay (multiplier 1, no jitter) and whose breaker never
// opens, so every event fails once and waits as a scheduled retry.
func startChaparStorm(bin, natsURL, vendorURL string, sc scenario, delay time.Duration, dir string) (*proc, error) {
	admin, err := freePort()
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by cmd/bench (retrystorm).\nadmin:\n  listen: 127.0.0.1:%d\n", admin)
	fmt.Fprintf(&b, "sink_defaults:\n  concurrency: %d\n", sc.workers)
	fmt.Fprintf(&b, "  retry: {initial_interval: %s, multiplier: 1, jitter: 0, max_interval: %s, max_attempts: 5, max_elapsed: 1h}\n", delay, delay)
	b.WriteString("  breaker: {failure_threshold: 4000000000, open_timeout: 15s, interval: 1m}\n")
	fmt.Fprintf(&b, "sinks:\n  - name: chabok-0\n    vendor: chabok\n    base_url: %s\n    settings: {app_id: demoapp, access_token: %s}\n", vendorURL, chabokToken)
	b.WriteString("routes:\n  - sinks: [chabok-0]\n")
	cfg := filepath.Join(dir, "chapar.yaml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	p, err := startProc("dispatcher", filepath.Join(dir, "dispatcher.log"), nil, bin, "run", "--config", cfg, "--nats-url", natsURL)
	if err != nil {
		return nil, err
	}
	if err := p.awaitReady(fmt.Sprintf("http://127.0.0.1:%d/readyz", admin), time.Minute); err != nil {
		_ = p.stop(10 * time.Second)
		return nil, err
	}
	return p, nil
}

// awaitWaiting waits until the vendor has failed every event and the
// retries stream holds a waiting retry for each (and nothing else), and
// returns the stream's state then.
func awaitWaiting(ctx context.Context, retries jetstream.Stream, v vendors, n int, sys *proc) (*jetstream.StreamInfo, error) {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := retries.Info(ictx)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("the retries stream's state: %w", err)
		}
		if info.State.Msgs == uint64(n) && failures(v.receipts()) == n {
			return info, nil
		}
		if err := sys.exitedEarly(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("after 10m: %d of %d events failed, %d retries waiting", failures(v.receipts()), n, info.State.Msgs)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func failures(recs []receipt) int {
	n := 0
	for _, r := range recs {
		if r.ok && r.seq >= 0 && r.status == http.StatusServiceUnavailable {
			n++
		}
	}
	return n
}

// failTimes are the first and the last 503 the vendor answered.
func failTimes(recs []receipt) (first, last time.Time) {
	for _, r := range recs {
		if !r.ok || r.seq < 0 || r.status != http.StatusServiceUnavailable {
			continue
		}
		if first.IsZero() || r.at.Before(first) {
			first = r.at
		}
		if r.at.After(last) {
			last = r.at
		}
	}
	return first, last
}

// movedSample is how many retries the server had moved (stored on their
// due subject) and the last one's timestamp, as one stream info said.
type movedSample struct {
	moved uint64
	at    time.Time
}

// awaitMoved waits until the server has stored n messages in the retries
// stream after sequence l0 (only due retries are: nothing else writes to
// it meanwhile), returning what each stream info said on the way.
func awaitMoved(ctx context.Context, retries jetstream.Stream, l0, n uint64) ([]movedSample, error) {
	deadline := time.Now().Add(5 * time.Minute)
	var out []movedSample
	for {
		ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
		info, err := retries.Info(ictx)
		cancel()
		if err != nil {
			return out, fmt.Errorf("the retries stream's state during the sweep: %w", err)
		}
		moved := info.State.LastSeq - l0
		if moved > 0 {
			out = append(out, movedSample{moved, info.State.LastTime})
		}
		if moved >= n {
			return out, nil
		}
		if time.Now().After(deadline) {
			return out, fmt.Errorf("after 5m the server had moved %d of %d retries", moved, n)
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// firedBy is when the server had moved the fraction q of n retries: the
// timestamp of the first sample at or past it (an upper bound, as fine as
// the samples), less resumed.
func firedBy(samples []movedSample, n uint64, q float64, resumed time.Time) time.Duration {
	for _, s := range samples {
		if float64(s.moved) >= q*float64(n) {
			return s.at.Sub(resumed)
		}
	}
	return 0
}

// awaitAccepted waits until the vendor has accepted every expected event.
func awaitAccepted(ctx context.Context, vs vendors, want expected, sys *proc) error {
	return vs.await(ctx, want, sys, 60*time.Second)
}

// lateness is each retry's receipt less when it became due: its scheduled
// time (its 503 plus delay) or the resumption, whichever is later; sorted,
// once as the storm's figures and once for result.lat.
func lateness(recs []receipt, delay time.Duration, resumed time.Time) (late, again []time.Duration) {
	failedAt := map[int]time.Time{}
	for _, r := range recs {
		if r.ok && r.seq >= 0 && r.status == http.StatusServiceUnavailable {
			failedAt[r.seq] = r.at
		}
	}
	for _, r := range recs {
		if !r.ok || r.seq < 0 || r.status != http.StatusOK {
			continue
		}
		due := failedAt[r.seq].Add(delay)
		if resumed.After(due) {
			due = resumed
		}
		late = append(late, r.at.Sub(due))
	}
	slices.Sort(late)
	return late, slices.Clone(late)
}

// stormSample is one probe publish: when it was sent and how long its
// ack took.
type stormSample struct {
	at  time.Time
	lat time.Duration
}

// stormProbe publishes probe events (seq -2, -3, …) to the events stream
// one at a time on a fixed schedule.
type stormProbe struct {
	js      jetstream.JetStream
	subject func(key string) string
	mu      sync.Mutex
	next    int
}

func (s *stormProbe) published() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return -s.next - 2
}

// run publishes for d and returns the latencies, sorted.
func (s *stormProbe) run(ctx context.Context, d time.Duration, stop <-chan struct{}) ([]time.Duration, error) {
	samples, err := s.samples(ctx, d, stop)
	out := make([]time.Duration, len(samples))
	for i, x := range samples {
		out[i] = x.lat
	}
	slices.Sort(out)
	return out, err
}

// samples publishes every stormProbeEvery until d passes or stop closes.
func (s *stormProbe) samples(ctx context.Context, d time.Duration, stop <-chan struct{}) ([]stormSample, error) {
	var out []stormSample
	start := time.Now()
	for i := 0; ; i++ {
		next := start.Add(time.Duration(i) * stormProbeEvery)
		if next.Sub(start) >= d {
			return out, nil
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-stop:
			return out, nil
		case <-time.After(time.Until(next)):
		}
		s.mu.Lock()
		seq := s.next
		s.next--
		s.mu.Unlock()
		raw, id, err := benchEvent(seq, 0, time.Now())
		if err != nil {
			return out, err
		}
		// A stall is what is measured: the deadline only keeps a lost
		// ack from wedging the run.
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		t0 := time.Now()
		_, err = s.js.Publish(pctx, s.subject(id), raw, jetstream.WithMsgID(id))
		lat := time.Since(t0)
		cancel()
		if err != nil {
			return out, fmt.Errorf("probe publish %d: %w", seq, err)
		}
		out = append(out, stormSample{at: t0, lat: lat})
	}
}

// splitSamples sorts the probe's latencies into those sent during the
// sweep (from resumed to moved) and while the retries drained (moved to
// drained).
func splitSamples(samples []stormSample, resumed, moved, drained time.Time) (sweep, drain []time.Duration) {
	for _, s := range samples {
		switch {
		case s.at.Before(resumed):
		case !s.at.After(moved):
			sweep = append(sweep, s.lat)
		case !s.at.After(drained):
			drain = append(drain, s.lat)
		}
	}
	slices.Sort(sweep)
	slices.Sort(drain)
	return sweep, drain
}

// currentRSS is pid's resident set size now, in bytes (VmRSS).
func currentRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status VmRSS: %w", pid, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, errors.New("/proc/" + strconv.Itoa(pid) + "/status: no VmRSS")
}

// pct is the p-th quantile of sorted, in milliseconds (NaN when empty).
func pct(sorted []time.Duration, p float64) float64 {
	if len(sorted) == 0 {
		return nan()
	}
	i := min(len(sorted)-1, int(p*float64(len(sorted))))
	return float64(sorted[i]) / float64(time.Millisecond)
}

// writeRetryStorm prints the retry storm's figures, when it ran.
func writeRetryStorm(w io.Writer, byKey map[string]result) {
	r, ok := byKey[retryStormName+"/chapar"]
	if !ok || r.err != nil || r.storm == nil {
		return
	}
	f := r.storm
	fmt.Fprintf(w, "\nRetry storm (Chapar): %d retries due at once (each failed once, retry delay %s; failed over %s; nats-server frozen %s, then resumed):\n",
		len(f.late), f.delay, f.failSpan.Round(time.Millisecond), f.frozen.Round(time.Millisecond))
	fmt.Fprintln(w, "\n| figure | value | goal |")
	fmt.Fprintln(w, "|---|--:|---|")
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	if len(f.fired) == 3 {
		fmt.Fprintf(w, "| server moved 1%% / 50%% / 99%% / all of the retries to their due subject, after resumption | %.0f / %.0f / %.0f / %.0f ms | 99%% ≤ 500 ms |\n",
			ms(f.fired[0]), ms(f.fired[1]), ms(f.fired[2]), ms(f.moved))
	}
	fmt.Fprintf(w, "| lateness at the vendor p50 / p99 / max (the sink drains them at its rate) | %.0f / %.0f / %.0f ms | |\n", pct(f.late, 0.5), pct(f.late, 0.99), pct(f.late, 1))
	fmt.Fprintf(w, "| retries delivered per second (first to last receipt) | %.0f | |\n", r.perSec)
	for _, s := range []struct {
		name string
		lat  []time.Duration
		goal string
	}{{"before (all waiting)", f.before, ""}, {"during the sweep", f.sweep, "max ≤ 50 ms"}, {"while the retries drain", f.drain, ""}} {
		fmt.Fprintf(w, "| events publish → ack %s, p50 / p99 / max (%d publishes) | %.1f / %.1f / %.1f ms | %s |\n",
			s.name, len(s.lat), pct(s.lat, 0.5), pct(s.lat, 0.99), pct(s.lat, 1), s.goal)
	}
	fmt.Fprintf(w, "| nats-server RSS, 0 → %d waiting retries, just stored → after %s at rest | %.1f → %.1f → %.1f MiB | |\n",
		len(f.late), stormRest, mib(f.rss0), mib(f.rssN), mib(f.rssRest))
	fmt.Fprintf(w, "| nats-server RSS per million waiting retries, just stored / at rest | %.0f / %.0f MiB | |\n", f.perMillion(f.rssN), f.perMillion(f.rssRest))
	fmt.Fprintf(w, "| retries stream per million waiting retries (disk) | %.0f MiB | |\n", mib(f.retriesBytes)/float64(max(len(f.late), 1))*1e6)
	fmt.Fprintf(w, "| dispatcher CPU-s, nats-server CPU-s (whole run) | %.2f, %.2f | |\n", r.sysCPU.Seconds(), r.natsCPU.Seconds())
}
