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
//     each and stores its retry, due a fixed delay later (a retry policy
//     with multiplier 1 and no jitter; the breaker never opens); a retry
//     due before the last event failed fails again and waits anew, until
//     one retry per event waits in CHAPAR_RETRIES. nats-server's RSS is
//     read before, then, and at rest: the memory per waiting retry.
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
// time is the vendor's last 503 for it plus the fixed delay, which the
// dispatcher sets a few milliseconds after the 503, so lateness is
// overstated by that), p50/p99/max, the probe's publish latency before the
// freeze, during the sweep and while the retries drain, and the RSS per
// million waiting retries. Every event must reach the vendor accepted
// exactly once, having failed at least once; every probe too.

import (
	"context"
	"encoding/json"
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

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

const retryStormName = "retrystorm"

// stormProbeEvery is the probe publisher's period: 100 publishes a second.
const stormProbeEvery = 10 * time.Millisecond

// stormFigures are the retry storm's own figures.
type stormFigures struct {
	delay time.Duration // the retry policy's fixed delay
	// failSpan is from the first 503 until a retry waited for every
	// event; failures the 503s in all (more than the events when the
	// dispatcher failed them more slowly than the delay: a retry due
	// meanwhile failed again).
	failSpan time.Duration
	failures int
	storm    uint64        // retries waiting at the freeze: one per event
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
	if f == nil || f.storm == 0 || rss < f.rss0 {
		return nan()
	}
	return mib(rss-f.rss0) / float64(f.storm) * 1e6
}

// stormRest is how long the retries wait, idle, before nats-server's RSS
// is read again: past the file store's block cache expiry (10 s), so what
// stays is what a waiting retry costs, not the cache of what was written.
const stormRest = 12 * time.Second

// stormRestFrom is the fewest events whose retries are read at rest: a
// few thousand retries' memory is lost in nats-server's own (go test
// ./cmd/bench runs 200, and waited stormRest for nothing).
const stormRestFrom = 10_000

// stormDelay is the fixed retry delay: long enough that the dispatcher
// has usually failed every event before the first retry is due (it fails
// 1,600–2,600 a second on the shared 2-core machine), leaving time to
// read the RSS at rest; short enough that the freeze stays short.
func stormDelay(events int) time.Duration {
	d := 3*time.Second + time.Duration(events)*700*time.Microsecond
	if events >= stormRestFrom {
		return d + stormRest
	}
	// The probes' baseline needs the first retry 2 s away once every
	// event has failed: 200 events took 0.2 s to fail on an idle machine
	// and 1.3 s under load (review rev17: the baseline missing, red).
	return d + 5*time.Second
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
	nc, js, err := ns.publisher()
	if err != nil {
		res.err = err
		return res
	}
	defer nc.Close()
	vs := h.vendors.prepare(1, 0)
	vendor := vs[0]
	pub := publisher{js: js, subject: func(key, typ string) string { return sys.subject(key, typ, 1) }}

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

	// 1. Every event fails and waits as a scheduled retry. On a busy
	// machine the dispatcher may fail them more slowly than the delay:
	// a retry due before the last event failed fails again and waits
	// anew, so the wait ends when every event has failed and a retry for
	// each waits, with nothing in flight.
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
	// Only the events fail; the probes (storm_probe) are accepted at once.
	vendor.chabok.SetFault(emulator.Fault{Status: http.StatusServiceUnavailable, Match: `"order_paid"`})
	h.log("  %d events published; the vendor answers 503; each retry is due %s after its failure", sc.events, fig.delay)
	if err := pub.backlog(ctx, sc.events); err != nil {
		res.err = err
		return res
	}
	info, err := awaitWaiting(ctx, js, retries, vs, sc.events, p)
	if err != nil {
		res.err = err
		return res
	}
	firstFail, _ := failTimes(vs.receipts())
	earliest, _ := dueSpan(vs.receipts(), fig.delay)
	fig.failSpan = time.Since(firstFail)
	fig.retriesBytes = info.State.Bytes
	if fig.rssN, err = currentRSS(natsPID); err != nil {
		res.err = err
		return res
	}
	h.log("  %d retries waiting (%.1f MiB in the stream) %s after the first failure; nats-server RSS %.1f → %.1f MiB",
		info.State.Msgs, mib(info.State.Bytes), fig.failSpan.Round(time.Millisecond), mib(fig.rss0), mib(fig.rssN))
	// At rest, if no retry falls due meanwhile: what stays once the store's
	// caches expire.
	if time.Until(earliest) > stormRest+3*time.Second {
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
	}
	// The probe's baseline: every retry waiting, none due.
	probes := &stormProbe{js: js, subject: func(key string) string { return pub.subject(key, envelope.TypeTrack) }, next: -2}
	if time.Until(earliest) > 2*time.Second {
		if fig.before, err = probes.run(ctx, time.Second, nil); err != nil {
			res.err = err
			return res
		}
	}

	// 2. The vendor recovers; nats-server is frozen until the last retry
	// is due, then every one is due at once. (A retry that fell due just
	// before the freeze is delivered then: not part of the storm, still
	// judged exactly once.)
	vendor.chabok.ClearFault()
	if info, err = retries.Info(ctx); err != nil {
		res.err = fmt.Errorf("the retries stream's state: %w", err)
		return res
	}
	l0 := info.State.LastSeq
	storm, err := waitingRetries(ctx, js, info)
	if err != nil {
		res.err = fmt.Errorf("the retries waiting: %w", err)
		return res
	}
	fig.storm = storm
	if err := syscall.Kill(natsPID, syscall.SIGSTOP); err != nil {
		res.err = fmt.Errorf("freeze nats-server: %w", err)
		return res
	}
	frozenAt := time.Now()
	_, latest := dueSpan(vs.receipts(), fig.delay)
	select {
	case <-ctx.Done():
		res.err = ctx.Err()
		return res
	case <-time.After(time.Until(latest.Add(100 * time.Millisecond))):
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
		samples, err := awaitMoved(ctx, js, retries, l0)
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
		fig.fired = append(fig.fired, firedBy(sw.samples, storm, q, resumed))
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
		if failed[seq] == 0 {
			res.err = fmt.Errorf("event %d never failed: every event must wait as a retry", seq)
			return res
		}
		fig.failures += failed[seq]
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

// awaitWaiting waits until the vendor has failed every event at least
// once, the retries stream holds exactly one waiting retry per event, and
// neither of the sink's consumers has anything pending or in flight; it
// returns the retries stream's state then.
func awaitWaiting(ctx context.Context, js jetstream.JetStream, retries jetstream.Stream, v vendors, n int, sys *proc) (*jetstream.StreamInfo, error) {
	deadline := time.Now().Add(15 * time.Minute)
	for {
		ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
		info, err := retries.Info(ictx)
		idle := err == nil && info.State.Msgs == uint64(n) && failed(v.receipts()) == n &&
			consumerIdle(ictx, js, "CHAPAR_EVENTS", "sink-chabok-0") && consumerIdle(ictx, js, "CHAPAR_RETRIES", "retry-chabok-0")
		cancel()
		if err != nil {
			return nil, fmt.Errorf("the retries stream's state: %w", err)
		}
		if idle {
			return info, nil
		}
		if err := sys.exitedEarly(); err != nil {
			return nil, err
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("after 15m: %d of %d events failed, %d retries waiting", failed(v.receipts()), n, info.State.Msgs)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// consumerIdle says the consumer has nothing pending and nothing in flight.
func consumerIdle(ctx context.Context, js jetstream.JetStream, stream, name string) bool {
	c, err := js.Consumer(ctx, stream, name)
	if err != nil {
		return false
	}
	info, err := c.Info(ctx)
	return err == nil && info.NumPending == 0 && info.NumAckPending == 0
}

// failed counts the events the vendor has answered 503 at least once.
func failed(recs []receipt) int {
	seen := map[int]bool{}
	for _, r := range recs {
		if r.ok && r.seq >= 0 && r.status == http.StatusServiceUnavailable {
			seen[r.seq] = true
		}
	}
	return len(seen)
}

// dueSpan is when the first and the last waiting retry fall due: each
// event's last 503 plus delay.
func dueSpan(recs []receipt, delay time.Duration) (earliest, latest time.Time) {
	for _, at := range lastFailures(recs) {
		due := at.Add(delay)
		if earliest.IsZero() || due.Before(earliest) {
			earliest = due
		}
		if due.After(latest) {
			latest = due
		}
	}
	return earliest, latest
}

// lastFailures is each event's last 503.
func lastFailures(recs []receipt) map[int]time.Time {
	out := map[int]time.Time{}
	for _, r := range recs {
		if r.ok && r.seq >= 0 && r.status == http.StatusServiceUnavailable && r.at.After(out[r.seq]) {
			out[r.seq] = r.at
		}
	}
	return out
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

// awaitMoved waits until no retry waits in the retries stream any more
// (its messages less the retry consumer's pending and in-flight ones are
// the waiting retries: nothing else writes to it meanwhile), returning
// how many the server had moved (stored after sequence l0) and when, as
// each stream info said on the way.
func awaitMoved(ctx context.Context, js jetstream.JetStream, retries jetstream.Stream, l0 uint64) ([]movedSample, error) {
	deadline := time.Now().Add(5 * time.Minute)
	var out []movedSample
	for {
		ictx, cancel := context.WithTimeout(ctx, 10*time.Second)
		info, err := retries.Info(ictx)
		var waiting uint64
		if err == nil {
			waiting, err = waitingRetries(ictx, js, info)
		}
		cancel()
		if err != nil {
			return out, fmt.Errorf("the retries stream's state during the sweep: %w", err)
		}
		moved := info.State.LastSeq - l0
		if moved > 0 {
			out = append(out, movedSample{moved, info.State.LastTime})
		}
		if waiting == 0 && moved > 0 {
			return out, nil
		}
		if time.Now().After(deadline) {
			return out, fmt.Errorf("after 5m the server had moved %d retries, %d still waiting", moved, waiting)
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// waitingRetries is how many retries wait in the retries stream (info):
// its messages less those due and not yet acked by the retry consumer.
func waitingRetries(ctx context.Context, js jetstream.JetStream, info *jetstream.StreamInfo) (uint64, error) {
	c, err := js.Consumer(ctx, "CHAPAR_RETRIES", "retry-chabok-0")
	if err != nil {
		return 0, err
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return 0, err
	}
	due := ci.NumPending + uint64(ci.NumAckPending)
	if due > info.State.Msgs {
		return 0, nil
	}
	return info.State.Msgs - due, nil
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
// time (its last 503 plus delay) or the resumption, whichever is later; sorted,
// once as the storm's figures and once for result.lat.
func lateness(recs []receipt, delay time.Duration, resumed time.Time) (late, again []time.Duration) {
	failedAt := lastFailures(recs)
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
		raw, id, err := stormProbeEvent(seq, time.Now())
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

// stormProbeEvent is benchEvent's probe seq named storm_probe, which the
// failing vendor accepts.
func stormProbeEvent(seq int, now time.Time) (raw []byte, id string, err error) {
	data, err := json.Marshal(envelope.Track{
		Name:       "storm_probe",
		Properties: map[string]any{"benchSeq": seq, "sentAt": strconv.FormatInt(now.UnixNano(), 10)},
		User:       envelope.User{ID: "probe", ChabokInstallationID: "inst-1"},
	})
	if err != nil {
		return nil, "", err
	}
	u, err := uuid.NewV7()
	if err != nil {
		return nil, "", err
	}
	at := now.UTC()
	env := &envelope.Envelope{
		SpecVersion: envelope.SpecVersion, ID: u.String(), Source: "bench", Type: envelope.TypeTrack,
		Time: &at, DataContentType: envelope.ContentTypeJSON, Data: data,
	}
	raw, err = env.Marshal()
	return raw, env.ID, err
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
	fmt.Fprintf(w, "\nRetry storm (Chapar): %d retries due at once, one per event (retry delay %s; %d 503s in all, a retry waiting for every event %s after the first; nats-server frozen %s, then resumed):\n",
		f.storm, f.delay, f.failures, f.failSpan.Round(time.Millisecond), f.frozen.Round(time.Millisecond))
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
	rest, restRSS := "–", "– (not read)"
	if f.rssRest > 0 {
		rest, restRSS = fmt.Sprintf("%.0f", f.perMillion(f.rssRest)), fmt.Sprintf("%.1f", mib(f.rssRest))
	}
	fmt.Fprintf(w, "| nats-server RSS, 0 → %d waiting retries, just stored → after %s at rest | %.1f → %.1f → %s MiB | |\n",
		f.storm, stormRest, mib(f.rss0), mib(f.rssN), restRSS)
	fmt.Fprintf(w, "| nats-server RSS per million waiting retries, just stored / at rest | %.0f / %s MiB | |\n", f.perMillion(f.rssN), rest)
	fmt.Fprintf(w, "| retries stream per million waiting retries (disk) | %.0f MiB | |\n", mib(f.retriesBytes)/float64(max(f.storm, 1))*1e6)
	fmt.Fprintf(w, "| dispatcher CPU-s, nats-server CPU-s (whole run) | %.2f, %.2f | |\n", r.sysCPU.Seconds(), r.natsCPU.Seconds())
}
