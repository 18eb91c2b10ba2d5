package main

// The ceilings: what this machine allows any system, measured in the same
// run as the systems (docs/benchmarks.md, "Ceilings").
//
//   - js-ceiling: JetStream pull + ack of the same events, no HTTP
//     (bench/peers/cmd/jsceiling: lean without the vendor). It delivers
//     nothing, so it is judged by what it acked: every event exactly once
//     (its receipts, written at exit), and its consumers' state (every
//     message acked, none redelivered).
//   - http-ceiling: the vendor's HTTP alone, no NATS
//     (bench/peers/cmd/httpceiling: lean without JetStream): the same
//     requests, the same concurrency and HTTP pool, the events fed on its
//     stdin. Judged at the vendor, exactly once, as the systems are.
//
// Every system is reported as a share of the lower of the two.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

const (
	jsCeiling   = "js-ceiling"
	httpCeiling = "http-ceiling"
)

// ceilingNames are measured in the default run, after the systems.
var ceilingNames = []string{jsCeiling, httpCeiling}

// defaultSystems are the systems and ceilings a run measures by default.
func defaultSystems() []string { return append(append([]string{}, systemNames...), ceilingNames...) }

// ceiling is the named ceiling, its binary in bin.
func ceiling(name, bin string) system {
	s := system{name: name, subject: func(string, string, int) string { return peerSubject }, prepare: preparePeerStream}
	switch name {
	case jsCeiling:
		s.label = "JetStream ceiling"
		s.start = func(natsURL string, _ []string, sc scenario, dir string) (*proc, error) {
			return startProc(name, filepath.Join(dir, name+".log"), nil, filepath.Join(bin, "jsceiling"),
				"-nats-url", natsURL, "-stream", peerStream, "-durable", "bench", "-sinks", strconv.Itoa(sc.sinks),
				"-workers", strconv.Itoa(sc.workers), "-receipts", nextReceipts(dir))
		}
		s.measure = func(ctx context.Context, h *harness, sc scenario) result { return h.measureJSCeiling(ctx, s, sc) }
	case httpCeiling:
		s.label = "HTTP ceiling"
		s.measure = func(ctx context.Context, h *harness, sc scenario) result {
			return h.measureHTTPCeiling(ctx, filepath.Join(bin, "httpceiling"), sc)
		}
	}
	return s
}

// nextReceipts names the receipts file of the js-ceiling's next run in dir.
func nextReceipts(dir string) string {
	for i := 1; ; i++ {
		p := filepath.Join(dir, fmt.Sprintf("receipts-%d.txt", i))
		if _, err := os.Stat(p); errors.Is(err, os.ErrNotExist) {
			// Claim the name now: the peer writes it only at exit.
			if f, err := os.Create(p); err == nil {
				f.Close()
			}
			return p
		}
	}
}

// measureJSCeiling is harness.measure for the js-ceiling: the same
// steps (a first run binds the consumers, the backlog is published while
// it is stopped, a fresh process drains it; or a paced publish), judged by
// what it acked.
func (h *harness) measureJSCeiling(ctx context.Context, sys system, sc scenario) (res result) {
	res = result{system: sys.name, scenario: sc.name, events: sc.events, deliveries: sc.events * sc.sinks}
	dir := filepath.Join(h.work, sc.name+"-"+sys.name)
	// A measurement measured again (a disturbed one) starts afresh: its
	// receipts and its JetStream store are this attempt's only.
	if err := os.RemoveAll(dir); err != nil {
		res.err = err
		return res
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		res.err = err
		return res
	}
	ns, err := startNATS(h.self, dir, 1)
	if err != nil {
		res.err = err
		return res
	}
	defer func() {
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
	if err := sys.prepare(ctx, js); err != nil {
		res.err = err
		return res
	}
	pub := publisher{js: js, subject: func(string, string) string { return peerSubject }}
	start := func() (*proc, error) { return sys.start(ns.url, nil, sc, dir) }
	probed := func(p *proc) error {
		if err := pub.probe(ctx, -1); err != nil {
			return err
		}
		return awaitAcked(ctx, js, sc.sinks, p, 30*time.Second)
	}
	if sc.rate == 0 {
		p, err := start()
		if err != nil {
			res.err = err
			return res
		}
		if err := probed(p); err != nil {
			_ = p.stop(30 * time.Second)
			res.err = fmt.Errorf("first run: %w", err)
			return res
		}
		if err := p.stop(30 * time.Second); err != nil {
			res.err = fmt.Errorf("first run: %w", err)
			return res
		}
		h.log("  %d events published while %s is stopped", sc.events, sys.label)
		if err := pub.backlog(ctx, sc.events); err != nil {
			res.err = err
			return res
		}
	}
	natsUse, err := startUsage(ns.pids()...)
	if err != nil {
		res.err = err
		return res
	}
	noise, err := startNoise()
	if err != nil {
		res.err = err
		return res
	}
	p, err := start()
	if err != nil {
		res.err = err
		return res
	}
	sysUse := usage{pids: []int{p.pid()}}
	stopped := false
	defer func() {
		if !stopped {
			_ = p.stop(30 * time.Second)
		}
	}()
	if sc.rate > 0 {
		if err := probed(p); err != nil {
			res.err = err
			return res
		}
		if natsUse, err = startUsage(ns.pids()...); err != nil {
			res.err = err
			return res
		}
		if sysUse, err = startUsage(p.pid()); err != nil {
			res.err = err
			return res
		}
		if noise, err = startNoise(); err != nil {
			res.err = err
			return res
		}
		if err := pub.paced(ctx, sc.events, sc.rate); err != nil {
			res.err = err
			return res
		}
	}
	if err := awaitAcked(ctx, js, sc.sinks, p, 30*time.Second); err != nil {
		res.err = err
		return res
	}
	if err := h.figures(&res, sysUse, natsUse, noise, p); err != nil {
		res.err = err
		return res
	}
	stopped = true
	if err := p.stop(30 * time.Second); err != nil {
		res.err = err
		return res
	}
	if err := consumersSettled(ctx, js, sc.sinks); err != nil {
		res.err = err
		return res
	}
	var recs []receipt
	files, _ := filepath.Glob(filepath.Join(dir, "receipts-*.txt"))
	for _, f := range files {
		rs, err := readReceipts(f)
		if err != nil {
			res.err = err
			return res
		}
		recs = append(recs, rs...)
	}
	if err := checkExactlyOnce(recs, sc.sinks, expected{events: sc.events, probes: 1}); err != nil {
		res.err = fmt.Errorf("acks: %w", err)
		return res
	}
	h.judged(&res, recs, sc)
	return res
}

// measureHTTPCeiling runs the HTTP ceiling: the bench writes the events
// to its stdin (a backlog all at once, or paced as the systems' are
// published) and judges the vendor's receipts as for every system.
func (h *harness) measureHTTPCeiling(ctx context.Context, bin string, sc scenario) (res result) {
	res = result{system: httpCeiling, scenario: sc.name, events: sc.events, deliveries: sc.events * sc.sinks}
	dir := filepath.Join(h.work, sc.name+"-"+httpCeiling)
	if err := os.RemoveAll(dir); err != nil {
		res.err = err
		return res
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		res.err = err
		return res
	}
	vs := h.vendors.prepare(sc.sinks, sc.latency)
	in, feed, err := os.Pipe()
	if err != nil {
		res.err = err
		return res
	}
	defer feed.Close()
	line := func(seq int) ([]byte, error) {
		raw, _, err := benchEvent(seq, sc.users, envelope.TypeTrack, "order_paid", time.Now())
		return append(raw, '\n'), err
	}
	// A backlog is made before the ceiling starts, as the systems' is
	// published while they are stopped.
	var backlog [][]byte
	if sc.rate == 0 {
		for seq := -1; seq < sc.events; seq++ {
			l, err := line(seq)
			if err != nil {
				res.err = err
				return res
			}
			backlog = append(backlog, l)
		}
	}
	noise, err := startNoise()
	if err != nil {
		res.err = err
		return res
	}
	p, err := startProcStdin(httpCeiling, filepath.Join(dir, httpCeiling+".log"), nil, in, bin,
		"-vendors", strings.Join(vs.urls(), ","), "-token", chabokToken, "-workers", strconv.Itoa(sc.workers))
	in.Close() // the child's now
	if err != nil {
		res.err = err
		return res
	}
	sysUse := usage{pids: []int{p.pid()}}
	stopped := false
	defer func() {
		if !stopped {
			_ = p.stop(30 * time.Second)
		}
	}()
	write := func(l []byte) error {
		if _, err := feed.Write(l); err != nil {
			return fmt.Errorf("feeding the HTTP ceiling: %w; %v", err, p.exitedEarly())
		}
		return nil
	}
	if sc.rate == 0 {
		for _, l := range backlog {
			if err := write(l); err != nil {
				res.err = err
				return res
			}
		}
	} else {
		l, err := line(-1)
		if err == nil {
			err = write(l)
		}
		if err == nil {
			err = vs.await(ctx, expected{probes: 1}, p, 30*time.Second)
		}
		if err != nil {
			res.err = err
			return res
		}
		if sysUse, err = startUsage(p.pid()); err != nil {
			res.err = err
			return res
		}
		if noise, err = startNoise(); err != nil {
			res.err = err
			return res
		}
		every, start := time.Second/time.Duration(sc.rate), time.Now()
		for seq := range sc.events {
			if d := time.Until(start.Add(time.Duration(seq) * every)); d > 0 {
				time.Sleep(d)
			}
			l, err := line(seq)
			if err == nil {
				err = write(l)
			}
			if err != nil {
				res.err = err
				return res
			}
			if ctx.Err() != nil {
				res.err = ctx.Err()
				return res
			}
		}
	}
	feed.Close()
	if err := vs.await(ctx, expected{events: sc.events, probes: 1}, p, 30*time.Second); err != nil {
		res.err = err
		return res
	}
	if err := h.figures(&res, sysUse, usage{}, noise, p); err != nil {
		res.err = err
		return res
	}
	stopped = true
	if err := p.stop(30 * time.Second); err != nil {
		res.err = err
		return res
	}
	recs := vs.receipts()
	if err := checkExactlyOnce(recs, sc.sinks, expected{events: sc.events, probes: 1}); err != nil {
		res.err = err
		return res
	}
	h.judged(&res, recs, sc)
	return res
}

// figures reads a ceiling's CPU, nats-server's and the rest of the
// machine's, and its peak RSS, while it still runs.
func (h *harness) figures(res *result, sysUse, natsUse usage, noise noise, p *proc) error {
	var err error
	if res.sysCPU, err = sysUse.since(); err != nil {
		return err
	}
	if res.natsCPU, err = natsUse.since(); err != nil {
		return err
	}
	if res.rss, err = peakRSS(p.pid()); err != nil {
		return err
	}
	res.otherCPU, res.window, err = noise.since(res.sysCPU + res.natsCPU)
	return err
}

// judged sets the rate and, in a rate scenario, the latencies from the
// receipts.
func (h *harness) judged(res *result, recs []receipt, sc scenario) {
	took, n := span(recs, sc.latency)
	if took > 0 {
		res.perSec = float64(n) / took.Seconds()
	}
	if sc.rate > 0 {
		res.lat = latencies(recs)
	}
}

// awaitAcked waits until each of the js-ceiling's consumers has acked
// everything in the stream, and fails if the ceiling exits or the ack
// floor does not move for stall.
func awaitAcked(ctx context.Context, js jetstream.JetStream, sinks int, sys interface{ exitedEarly() error }, stall time.Duration) error {
	lastMove, last := time.Now(), uint64(0)
	for {
		floor, target, err := ackFloor(ctx, js, sinks)
		if err != nil {
			return err
		}
		if floor >= target {
			return nil
		}
		if floor != last {
			last, lastMove = floor, time.Now()
		}
		if err := sys.exitedEarly(); err != nil {
			return err
		}
		if time.Since(lastMove) > stall {
			return fmt.Errorf("stalled: the ack floor stayed at %d of %d for %s", floor, target, stall)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// ackFloor is the lowest stream sequence every consumer has acked up to,
// and the stream's last sequence.
func ackFloor(ctx context.Context, js jetstream.JetStream, sinks int) (floor, last uint64, err error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, peerStream)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s: %w", peerStream, err)
	}
	floor = ^uint64(0)
	for i := range sinks {
		c, err := st.Consumer(ctx, fmt.Sprintf("bench-%d", i))
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			floor = 0 // the ceiling is starting: it makes its consumers
			continue
		}
		if err != nil {
			return 0, 0, fmt.Errorf("consumer bench-%d: %w", i, err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			return 0, 0, fmt.Errorf("consumer bench-%d: %w", i, err)
		}
		floor = min(floor, info.AckFloor.Stream)
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("stream %s: %w", peerStream, err)
	}
	return floor, info.State.LastSeq, nil
}

// consumersSettled checks the js-ceiling's consumers after it stopped:
// nothing left unacked, nothing redelivered (an ack lost, or one sent
// after ack_wait, would show as a redelivery).
func consumersSettled(ctx context.Context, js jetstream.JetStream, sinks int) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for i := range sinks {
		c, err := js.Consumer(ctx, peerStream, fmt.Sprintf("bench-%d", i))
		if err != nil {
			return fmt.Errorf("consumer bench-%d: %w", i, err)
		}
		info, err := c.Info(ctx)
		if err != nil {
			return fmt.Errorf("consumer bench-%d: %w", i, err)
		}
		if info.NumAckPending != 0 || info.NumRedelivered != 0 || info.NumPending != 0 {
			return fmt.Errorf("consumer bench-%d: %d unacked, %d redelivered, %d not delivered", i,
				info.NumAckPending, info.NumRedelivered, info.NumPending)
		}
	}
	return nil
}

// readReceipts reads a js-ceiling receipts file: "sink seq sentAt at"
// lines, each an event acked (a receipt the vendor accepted, for the
// exactly-once check).
func readReceipts(path string) ([]receipt, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []receipt
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var sink, seq int
		var sent, at int64
		if _, err := fmt.Sscanf(sc.Text(), "%d %d %d %d", &sink, &seq, &sent, &at); err != nil {
			return nil, fmt.Errorf("%s: %q: %w", path, sc.Text(), err)
		}
		out = append(out, receipt{sink: sink, seq: seq, ok: true, status: 200, sent: time.Unix(0, sent), at: time.Unix(0, at)})
	}
	return out, sc.Err()
}
