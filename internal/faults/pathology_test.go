package faults

// The vendor pathology matrix (issue 18): every kind of misbehaving vendor,
// each against a plain, a batched and an ordered chabok sink of one
// dispatcher process. Each pathology has its own vendor (pathology_vendor_test.go)
// and its own three sinks, and its events are routed to those by name, so
// pathologies cannot disturb each other. A phase sets the pathology,
// publishes events, waits until every (event, sink) is settled, then heals
// the vendor and publishes more. For every pathology:
//
//   - every event ends delivered once (Chapar acked one delivery, its
//     chapar_deliveries_total) or dead-lettered once with a named reason
//     and the cause in its error, within max_elapsed of its first attempt
//     give or take the breaker's cycles (elapsedBound);
//   - the breaker opens on a persistent transient failure, never on an
//     answer (2xx or a redirect), and is closed once the vendor is healed
//     and the next events are delivered;
//   - the dispatcher's goroutines and resident memory (its /metrics) come
//     back within bounds once the phase is over.
//
// The short form (CI) runs every pathology at once in one phase; -long
// runs them one after another with more events, measuring each alone.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/freeport"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// breakerWant is what a pathology does to the sink's breaker.
type breakerWant int

const (
	breakerStays breakerWant = iota // an answer: the breaker never opens
	breakerOpens                    // a persistent transient failure opens it
	breakerMay                      // timeouts that may come in a row (late 200s)
)

// pathology is one row of the matrix.
type pathology struct {
	name  string // in its sinks' and events' names
	title string
	mode  frontMode
	dns   bool // no vendor at all: the sinks name an unresolvable host
	// What becomes of an event sent while it lasts.
	deliver  bool     // delivered; otherwise dead-lettered with reason
	reason   string   // the dead letter's reason
	errWords []string // one of these is in the dead letter's error (lower case)
	breaker  breakerWant
	dup      bool // the vendor stores each event twice (it was given it twice)
	// either: delivered, or dead-lettered with reason and errWords
	// (a late 200 is a timeout to Chapar: with many events the breaker
	// cycles and some reach max_elapsed before a retry gets through).
	either bool
}

func pathologies() []pathology {
	timeout := []string{"timeout", "deadline exceeded"}
	return []pathology{
		{name: "hang", title: "no answer at all (TCP accepted, not a byte back)", mode: modeNoAnswer, reason: "retries_exhausted", errWords: timeout, breaker: breakerOpens},
		{name: "slowheaders", title: "headers after twice the timeout", mode: modeSlowHeaders, reason: "retries_exhausted", errWords: timeout, breaker: breakerOpens},
		{name: "trickle", title: "2xx whose body trickles (1 byte / 50 ms)", mode: modeTrickle, deliver: true},
		{name: "reset", title: "connection reset after the request (RST)", mode: modeReset, reason: "retries_exhausted", errWords: []string{"reset by peer", "eof", "broken pipe"}, breaker: breakerOpens},
		{name: "refused", title: "connection refused (nothing listening)", mode: modeRefused, reason: "retries_exhausted", errWords: []string{"connection refused"}, breaker: breakerOpens},
		{name: "dns", title: "DNS failure (vendor.invalid)", dns: true, reason: "retries_exhausted", errWords: []string{"no such host"}, breaker: breakerOpens},
		{name: "tls", title: "TLS handshake failure (untrusted certificate)", mode: modeBadCert, reason: "retries_exhausted", errWords: []string{"certificate"}, breaker: breakerOpens},
		{name: "redirect", title: "307 redirect to another host", mode: modeRedirect, reason: "vendor_rejected", errWords: []string{"redirect"}},
		{name: "garbage", title: "200 with a body that is not JSON", mode: modeGarbage, deliver: true},
		{name: "huge", title: "200 with a 64 MiB body", mode: modeHuge, deliver: true},
		{name: "late", title: "200 after the client gave up (stored, first request of each event)", mode: modeLate, deliver: true, dup: true, breaker: breakerMay,
			either: true, reason: "retries_exhausted", errWords: timeout},
	}
}

var variants = []string{"plain", "batched", "ordered"}

func sinkNames(p pathology) []string {
	out := make([]string, len(variants))
	for i, v := range variants {
		out[i] = p.name + "-" + v
	}
	return out
}

// The sinks' settings: short, so a persistent failure ends in seconds.
const (
	mxConcurrency = 4
	mxTimeout     = time.Second
	mxMaxAttempts = 3
	mxMaxElapsed  = 4 * time.Second
	mxThreshold   = 3
	mxOpenTimeout = 500 * time.Millisecond
	mxUsers       = 3 // events are spread over this many users (the ordered sinks' keys)
	// mxPull is about how many messages a sink settles in one half-open
	// window of its breaker: its concurrency.
	mxPull = mxConcurrency
)

// elapsedBound is how long after its first attempt an event may be
// dead-lettered while n events per sink wait: max_elapsed and an attempt
// under way, then the breaker's cycles (an open period and a probe) until
// the sink has taken it: expired events are dead-lettered as the sink
// takes them, and while the breaker is open it takes nothing, so each
// half-open window settles a pull's worth. Plus a second for the broker
// and the retry schedule's resolution on a busy machine.
func elapsedBound(n int) time.Duration {
	return mxMaxElapsed + mxTimeout + time.Duration(n/mxPull+2)*(mxOpenTimeout+mxTimeout) + time.Second
}

// Bounds on the dispatcher, against before a phase. Goroutines are counted
// with no connection to a vendor open (each vendor drops its connections
// first, and the count is read once it is steady), so keep-alive pools do
// not blur it: a goroutine left behind per request would show. Resident
// memory is sampled through the phase: one 64 MiB body read whole would
// show.
const (
	mxGoroutineSlack = 20
	mxRSSSlack       = 64 << 20
)

type matrix struct {
	t         *testing.T
	dir       string
	rows      []pathology
	fronts    map[string]*front
	elsewhere atomic.Int64 // requests that followed a redirect
	disp      *dispatcherProc
	js        jetstream.JetStream
	dlq       *matrixDLQ
	n         int // events per pathology per phase (each to 3 sinks)
	seq       int
	ackedAt   map[string]time.Time
}

func newMatrix(t *testing.T, rows []pathology, n int) *matrix {
	t.Helper()
	m := &matrix{t: t, dir: keptDir(t), rows: rows, fronts: map[string]*front{}, n: n, ackedAt: map[string]time.Time{}}
	nodes := startNATS(t, m.dir, 1)
	elsewhere := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		m.elsewhere.Add(1)
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(elsewhere.Close)
	ca := newTestCA(t, m.dir)
	for _, p := range rows {
		if !p.dns {
			m.fronts[p.name] = newFront(t, ca, mxTimeout, elsewhere.URL)
		}
	}
	admin := fmt.Sprintf("127.0.0.1:%d", freeport.Port(t))
	m.disp = startDispatcherYAML(t, m.dir, "dispatcher", m.yaml(admin), admin, nodes[0].url(),
		[]string{"SSL_CERT_FILE=" + ca.file})
	nc, err := nats.Connect(nodes[0].url())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	m.js, _ = jetstream.New(nc)
	m.dlq = &matrixDLQ{js: m.js, recs: map[string][]deadLetter{}}
	return m
}

func (m *matrix) baseURL(p pathology, sink string) string {
	if p.dns {
		return "https://vendor.invalid/" + sink + "/api"
	}
	return m.fronts[p.name].baseURL(sink)
}

func (m *matrix) yaml(admin string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# generated by internal/faults (pathology matrix)
streams:
  replicas: 1
  storage: file
dispatcher:
  ack_wait: 5s
  shutdown_grace: 2s
  log_format: json
  log_level: info
admin:
  listen: %q
sink_defaults:
  concurrency: %d
  max_ack_pending: 100
  timeout: %s
  retry:
    initial_interval: 100ms
    multiplier: 2
    jitter: 0.2
    max_interval: 500ms
    max_attempts: %d
    max_elapsed: %s
  breaker:
    failure_threshold: %d
    open_timeout: %s
    interval: 1m
sinks:
`, admin, mxConcurrency, mxTimeout, mxMaxAttempts, mxMaxElapsed, mxThreshold, mxOpenTimeout)
	for _, p := range m.rows {
		for i, s := range sinkNames(p) {
			fmt.Fprintf(&b, "  - name: %s\n    vendor: chabok\n    base_url: %s\n    settings:\n      app_id: faults\n      access_token: %s\n",
				s, m.baseURL(p, s), vendorToken)
			switch variants[i] {
			case "batched":
				b.WriteString("    batch:\n      max_items: 4\n      max_wait: 100ms\n")
			case "ordered":
				b.WriteString("    order: by_user\n")
			}
		}
	}
	b.WriteString("routes:\n")
	for _, p := range m.rows {
		fmt.Fprintf(&b, "  - types: [chapar.track]\n    names: [p_%s]\n    sinks: [%s]\n", p.name, strings.Join(sinkNames(p), ", "))
	}
	return b.String()
}

// publish sends n events of pathology p, one user after another so each
// user's events are in order, and returns their ids.
func (m *matrix) publish(p pathology, n int) []string {
	m.t.Helper()
	ids := newIDs(n)
	for i, id := range ids {
		m.seq++
		env, err := envelope.New(envelope.TypeTrack, "chapar-faults", envelope.Track{
			Name:       "p_" + p.name,
			Properties: map[string]any{"eid": id, "seq": m.seq},
			User:       envelope.User{ID: fmt.Sprintf("u%d", i%mxUsers)},
		}, envelope.WithID(id))
		if err != nil {
			m.t.Fatal(err)
		}
		raw, _ := json.Marshal(env)
		msg := nats.NewMsg(envelope.Subject(envelope.DefaultSubjectPrefix, env.Type))
		msg.Header.Set("Content-Type", envelope.ContentTypeCloudEvents)
		msg.Data = raw
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = m.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id))
		cancel()
		if err != nil {
			m.t.Fatalf("publish: %v", err)
		}
		m.ackedAt[id] = time.Now()
	}
	return ids
}

// delivered says whether every id reached every sink of p with a 2xx that
// Chapar saw.
func (m *matrix) delivered(p pathology, ids []string) bool {
	f := m.fronts[p.name]
	for _, s := range sinkNames(p) {
		for _, id := range ids {
			if f.event(s, id).live == 0 {
				return false
			}
		}
	}
	return true
}

// settled says whether every (event, sink) of p is delivered or
// dead-lettered, as p expects.
func (m *matrix) settled(p pathology, ids []string) bool {
	if p.deliver && !p.either {
		return m.delivered(p, ids)
	}
	for _, s := range sinkNames(p) {
		for _, id := range ids {
			if len(m.dlq.recs[s+"/"+id]) > 0 {
				continue
			}
			if !p.either || m.fronts[p.name].event(s, id).live == 0 {
				return false
			}
		}
	}
	return true
}

// usage is the dispatcher's goroutines and resident memory.
type usage struct {
	goroutines int
	rss        float64
}

func (m *matrix) scrape() (map[string]float64, error) {
	resp, err := http.Get("http://" + m.disp.admin + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out, sc.Err()
}

func (m *matrix) usage() usage {
	m.t.Helper()
	s, err := m.scrape()
	if err != nil {
		m.t.Fatal(err)
	}
	return usage{goroutines: int(s["go_goroutines"]), rss: s["process_resident_memory_bytes"]}
}

// quiesce closes every connection to a vendor and reads the dispatcher's
// usage once its goroutine count is steady (the client notices a closed
// keep-alive connection a moment later).
func (m *matrix) quiesce() usage {
	m.t.Helper()
	for _, f := range m.fronts {
		f.set(f.currentMode()) // closes what is open
	}
	last := m.usage()
	steady := 0
	_ = waitFor(10*time.Second, func() bool {
		time.Sleep(250 * time.Millisecond) // pace the reads
		u := m.usage()
		if u.goroutines == last.goroutines {
			steady++
		} else {
			steady = 0
		}
		last = u
		return steady >= 2
	})
	return last
}

// sample reads the dispatcher's usage every 250 ms until the returned
// function is called, which gives the highest figures seen.
func (m *matrix) sample() func() usage {
	stop := make(chan struct{})
	done := make(chan usage, 1)
	var once sync.Once
	end := func() usage {
		once.Do(func() { close(stop) })
		return <-done
	}
	m.t.Cleanup(func() { once.Do(func() { close(stop); <-done }) }) // a phase that failed
	go func() {
		var top usage
		t := time.NewTicker(250 * time.Millisecond)
		defer t.Stop()
		for {
			if s, err := m.scrape(); err == nil {
				top.goroutines = max(top.goroutines, int(s["go_goroutines"]))
				top.rss = max(top.rss, s["process_resident_memory_bytes"])
			}
			select {
			case <-stop:
				done <- top
				return
			case <-t.C:
			}
		}
	}()
	return end
}

func (m *matrix) breakerState(sink string) float64 {
	s, err := m.scrape()
	if err != nil {
		return -1
	}
	v, ok := s[`chapar_breaker_state{sink="`+sink+`"}`]
	if !ok {
		return 0 // never changed state: closed
	}
	return v
}

// breakerOpens counts, per sink, the breaker's changes to open in the
// dispatcher's log.
func (m *matrix) breakerOpens() map[string]int {
	m.t.Helper()
	f, err := os.Open(m.disp.log)
	if err != nil {
		m.t.Fatal(err)
	}
	defer f.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if !strings.Contains(sc.Text(), "circuit breaker changed state") {
			continue
		}
		var l struct{ Sink, To string }
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.To == "open" {
			out[l.Sink]++
		}
	}
	return out
}

// idle waits until no consumer holds work: a late duplicate or second dead
// letter would have been written by then.
func (m *matrix) idle(timeout time.Duration) {
	m.t.Helper()
	eventually(m.t, timeout, "every consumer idle", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		streams := m.js.ListStreams(ctx)
		for si := range streams.Info() {
			st, err := m.js.Stream(ctx, si.Config.Name)
			if err != nil {
				return false
			}
			cl := st.ListConsumers(ctx)
			for ci := range cl.Info() {
				if ci.NumPending > 0 || ci.NumAckPending > 0 {
					return false
				}
			}
			if cl.Err() != nil {
				return false
			}
		}
		return streams.Err() == nil
	})
}

// rowFigures is what one pathology's phase measured.
type rowFigures struct {
	p                   pathology
	ids, healIDs        []string
	settledIn           time.Duration // from the phase's start until every event was settled
	recovery            time.Duration // from the heal until every new event was delivered
	requests, stored    int           // vendor side, over the phase's events and sinks
	duplicates          int           // stores beyond the first
	deadLetters         int
	delivered           int            // (event, sink) delivered
	storedDead          int            // dead-lettered, yet stored at the vendor (a late 200)
	healDuplicates      int            // vendor-side duplicates of the events sent after the heal
	deliveries          map[string]int // chapar_deliveries_total over the phase, per sink
	maxDLAfterPublish   time.Duration  // publish → dead letter, slowest
	maxDLAfterFirst     time.Duration  // first attempt → last attempt, slowest
	maxAttempts         int
	slowest             string // the attempt log of the event retried longest
	reasons, errSamples []string
	opens               map[string]int
	connections         int   // TCP connections accepted while it lasted (hang, tls)
	before, after       usage // with no connection to a vendor open
	peak                usage // the most seen during the phase
	fails               []string
}

// phase runs rows at once: the pathologies, then the heal. It returns one
// figure per row.
func (m *matrix) phase(rows []pathology) []*rowFigures {
	m.t.Helper()
	before := m.quiesce()
	opens0 := m.breakerOpens()
	counts0, err := m.scrape()
	if err != nil {
		m.t.Fatal(err)
	}
	peak := m.sample()
	figs := make([]*rowFigures, len(rows))
	start := time.Now()
	for i, p := range rows {
		figs[i] = &rowFigures{p: p, before: before}
		if !p.dns {
			m.fronts[p.name].set(p.mode)
		}
	}
	for i, p := range rows {
		figs[i].ids = m.publish(p, m.n)
	}
	// Persistent failures settle by max_elapsed of each event's first
	// attempt, give or take the breaker's cycles; an ordered key's events
	// are attempted one after another.
	timeout := 60*time.Second + time.Duration(m.n/mxUsers+1)*elapsedBound(mxConcurrency)
	pending := slices.Clone(figs)
	err = waitFor(timeout, func() bool {
		_ = m.dlq.update()
		pending = slices.DeleteFunc(pending, func(f *rowFigures) bool {
			if m.settled(f.p, f.ids) {
				f.settledIn = time.Since(start)
				return true
			}
			return false
		})
		return len(pending) == 0
	})
	if err != nil {
		var names []string
		for _, f := range pending {
			names = append(names, f.p.name)
		}
		m.t.Fatalf("not settled after %s: %v (log: %s)", timeout, names, m.disp.log)
	}
	m.idle(30 * time.Second)
	_ = m.dlq.update()
	for _, f := range figs {
		if !f.p.dns {
			f.connections = m.fronts[f.p.name].connections(f.p.mode)
		}
	}

	// Heal every vendor that can be healed (a name that does not resolve
	// needs a config change) and send more events.
	heal := time.Now()
	for _, f := range figs {
		if !f.p.dns {
			m.fronts[f.p.name].set(modeHealthy)
			f.healIDs = m.publish(f.p, m.n)
		}
	}
	for _, f := range figs {
		if f.p.dns {
			continue
		}
		eventually(m.t, 60*time.Second, f.p.name+": events after the heal delivered", func() bool { return m.delivered(f.p, f.healIDs) })
		f.recovery = time.Since(heal)
		for _, s := range sinkNames(f.p) {
			eventually(m.t, 30*time.Second, s+": breaker closed", func() bool { return m.breakerState(s) == 0 })
		}
	}
	m.idle(30 * time.Second)
	_ = m.dlq.update()
	opens1 := m.breakerOpens()
	counts1, err := m.scrape()
	if err != nil {
		m.t.Fatal(err)
	}

	top := peak()
	after := m.quiesce()
	for _, f := range figs {
		f.after, f.peak = after, top
		f.opens, f.deliveries = map[string]int{}, map[string]int{}
		for _, s := range sinkNames(f.p) {
			f.opens[s] = opens1[s] - opens0[s]
			series := `chapar_deliveries_total{sink="` + s + `"}`
			f.deliveries[s] = int(counts1[series] - counts0[series])
		}
		m.check(f)
	}
	return figs
}

// check works out a row's figures and what it missed.
func (m *matrix) check(f *rowFigures) {
	p := f.p
	want := func(ok bool, format string, args ...any) {
		if !ok {
			f.fails = append(f.fails, fmt.Sprintf(format, args...))
		}
	}
	for _, s := range sinkNames(p) {
		for _, id := range f.ids {
			var b eventBook
			if !p.dns {
				b = m.fronts[p.name].event(s, id)
			}
			recs := m.dlq.recs[s+"/"+id]
			f.requests += b.requests
			f.stored += b.stored
			f.duplicates += max(b.stored-1, 0)
			f.deadLetters += len(recs)
			if p.either && len(recs) > 0 {
				// Dead-lettered instead: checked as a dead letter below,
				// but the vendor may have stored it (it answered late).
				want(b.live == 0, "%s %s: delivered and dead-lettered (%s)", s, id, recs)
				if b.stored > 0 {
					f.storedDead++
				}
			} else if p.deliver {
				f.delivered++
				want(b.live >= 1, "%s %s: no 2xx answer reached Chapar", s, id)
				want(len(recs) == 0, "%s %s: delivered and dead-lettered (%s)", s, id, recs)
				continue
			}
			want(len(recs) == 1, "%s %s: %d dead letters, want 1", s, id, len(recs))
			want(p.either || b.stored == 0, "%s %s: dead-lettered but stored %d times", s, id, b.stored)
			for _, r := range recs {
				want(r.reason == p.reason, "%s %s: dead letter reason %q, want %q", s, id, r.reason, p.reason)
				// The cause is named by the last error or, when a loaded
				// machine made the last attempt a plain timeout, by an
				// earlier one in the record's attempt log.
				lower := strings.ToLower(r.err + "\n" + r.log)
				want(slices.ContainsFunc(p.errWords, func(w string) bool { return strings.Contains(lower, w) }),
					"%s %s: dead letter (error %q, attempts %s) names none of %q", s, id, r.err, r.log, p.errWords)
				f.maxDLAfterPublish = max(f.maxDLAfterPublish, r.at.Sub(m.ackedAt[id]))
				if d := r.last.Sub(r.first); d > f.maxDLAfterFirst {
					f.maxDLAfterFirst, f.slowest = d, s+" "+id+": "+r.log
				}
				// Within max_elapsed of the first attempt, give or take the
				// breaker's cycles (elapsedBound): no attempt starts after
				// max_elapsed (worker.go's expired).
				want(r.last.Sub(r.first) <= elapsedBound(len(f.ids)), "%s %s: dead-lettered %s after its first attempt, beyond %s (max_elapsed %s): %s",
					s, id, r.last.Sub(r.first), elapsedBound(len(f.ids)), mxMaxElapsed, r.log)
				f.maxAttempts = max(f.maxAttempts, r.attempts)
				if !slices.Contains(f.reasons, r.reason) {
					f.reasons = append(f.reasons, r.reason)
				}
				if len(f.errSamples) == 0 {
					f.errSamples = append(f.errSamples, r.err)
				}
			}
		}
		for _, id := range f.healIDs {
			b := m.fronts[p.name].event(s, id)
			want(b.live >= 1, "%s %s (after the heal): no 2xx answer reached Chapar", s, id)
			f.healDuplicates += max(b.stored-1, 0)
			want(len(m.dlq.recs[s+"/"+id]) == 0, "%s %s (after the heal): dead-lettered", s, id)
		}
		// Delivered once: Chapar acked one delivery per event it did not
		// dead-letter (chapar_deliveries_total). A second store at the
		// vendor without a second delivery is a request Chapar gave up on
		// (its timeout) that the vendor still stored: at-least-once.
		wantDeliveries := len(f.healIDs)
		for _, id := range f.ids {
			if len(m.dlq.recs[s+"/"+id]) == 0 {
				wantDeliveries++
			}
		}
		want(f.deliveries[s] == wantDeliveries, "%s: Chapar delivered %d times, want %d (one per event not dead-lettered)", s, f.deliveries[s], wantDeliveries)
		switch p.breaker {
		case breakerOpens:
			want(f.opens[s] > 0, "%s: the breaker never opened", s)
		case breakerStays:
			// Answers never open it. The short form runs beside the rest
			// of the suite, where a healthy request can outlive the 1 s
			// timeout: one opening is that noise; an answer that opened
			// it would do so again and again. The long form allows none.
			noise := 1
			if long() {
				noise = 0
			}
			want(f.opens[s] <= noise, "%s: the breaker opened %d times on answers", s, f.opens[s])
		}
	}
	if p.mode == modeRedirect {
		want(m.elsewhere.Load() == 0, "%d requests followed the redirect", m.elsewhere.Load())
	}
	want(f.after.goroutines <= f.before.goroutines+mxGoroutineSlack, "goroutines %d → %d (bound +%d)", f.before.goroutines, f.after.goroutines, mxGoroutineSlack)
	want(f.peak.rss <= f.before.rss+mxRSSSlack, "RSS %.0f MiB, peak %.0f MiB (bound +%d MiB)", f.before.rss/(1<<20), f.peak.rss/(1<<20), mxRSSSlack>>20)
}

func (f *rowFigures) notes() string {
	var b strings.Builder
	switch {
	case f.p.either:
		fmt.Fprintf(&b, "%d delivered once, %d dead-lettered (%s) of which %d stored at the vendor; %d requests, stored %d times (%d vendor-side duplicates)",
			f.delivered, f.deadLetters, strings.Join(f.reasons, ","), f.storedDead, f.requests, f.stored, f.duplicates)
	case f.p.deliver:
		fmt.Fprintf(&b, "delivered once each by Chapar's count; %d requests, stored %d times (%d vendor-side duplicates)", f.requests, f.stored, f.duplicates)
	default:
		fmt.Fprintf(&b, "%d dead letters (%s), ≤ %d attempts, last attempt ≤ %s after the first, dead-lettered ≤ %s after publish; %d requests reached the vendor",
			f.deadLetters, strings.Join(f.reasons, ","), f.maxAttempts, f.maxDLAfterFirst.Round(10*time.Millisecond),
			f.maxDLAfterPublish.Round(10*time.Millisecond), f.requests)
		if f.connections > 0 {
			fmt.Fprintf(&b, " (%d TCP connections)", f.connections)
		}
		if len(f.errSamples) > 0 {
			e := f.errSamples[0]
			if len(e) > 240 {
				e = e[:240] + "…"
			}
			fmt.Fprintf(&b, "; error: %q", e)
		}
	}
	fmt.Fprintf(&b, "; all settled %s after the phase began", f.settledIn.Round(100*time.Millisecond))
	if f.healDuplicates > 0 {
		fmt.Fprintf(&b, "; %d vendor-side duplicates after the heal (timeouts under load)", f.healDuplicates)
	}
	var opens []string
	for _, s := range sinkNames(f.p) {
		opens = append(opens, strconv.Itoa(f.opens[s]))
	}
	fmt.Fprintf(&b, "; breaker opened %s times (plain/batched/ordered)", strings.Join(opens, "/"))
	if !f.p.dns {
		fmt.Fprintf(&b, ", closed after the heal")
	}
	fmt.Fprintf(&b, "; goroutines %d → %d (peak %d), RSS %.0f → %.0f MiB (peak %.0f)", f.before.goroutines, f.after.goroutines, f.peak.goroutines,
		f.before.rss/(1<<20), f.after.rss/(1<<20), f.peak.rss/(1<<20))
	return b.String()
}

// warm sends one healthy round through every sink that has a vendor, so the
// keep-alive pools are full before the first measurement.
func (m *matrix) warm() {
	m.t.Helper()
	for _, p := range m.rows {
		if p.dns {
			continue
		}
		ids := m.publish(p, mxUsers)
		eventually(m.t, 60*time.Second, p.name+": warm-up delivered", func() bool { return m.delivered(p, ids) })
	}
	m.idle(30 * time.Second)
}

// TestVendorPathologyMatrix runs every pathology against a plain, a batched
// and an ordered sink. Short: all at once, 6 events each; long: one after
// another, 30 events each, each measured alone.
func TestVendorPathologyMatrix(t *testing.T) {
	rows := pathologies()
	n := 2 * mxUsers
	if long() {
		n = 10 * mxUsers
	}
	m := newMatrix(t, rows, n)
	m.warm()
	var figs []*rowFigures
	if long() {
		for _, p := range rows {
			figs = append(figs, m.phase([]pathology{p})...)
		}
	} else {
		figs = m.phase(rows)
	}
	for _, f := range figs {
		g := &goals{t: t, fails: f.fails}
		o := outcome{published: len(f.ids) * len(variants), duplicates: f.duplicates, recovery: f.recovery}
		o.delivered, o.deadLettered = f.delivered, f.deadLetters
		if f.p.dns {
			o.recovery = notMeasured
		}
		mode := "all 11 at once"
		if long() {
			mode = "alone"
		}
		g.finish(result{
			scenario: "m. " + f.p.title,
			load:     fmt.Sprintf("%d events × plain/batched/ordered, %s", len(f.ids), mode),
			o:        o,
			notes:    f.notes(),
		}, "")
	}
}

// deadLetter is one record in CHAPAR_DLQ, as the matrix reads it.
type deadLetter struct {
	reason, err string
	attempts    int
	first, last time.Time
	at          time.Time
	log         string // the attempt log (Chapar-Attempt-Log), for a failure's message
}

func (d deadLetter) String() string { return d.reason + ": " + d.err }

// matrixDLQ reads CHAPAR_DLQ by sequence, keyed by sink and event id.
type matrixDLQ struct {
	js   jetstream.JetStream
	next uint64
	recs map[string][]deadLetter
}

func (b *matrixDLQ) update() error {
	tm := func(h nats.Header, k string) time.Time { t, _ := time.Parse(time.RFC3339Nano, h.Get(k)); return t }
	return readDLQ(b.js, &b.next, func(msg *jetstream.RawStreamMsg) {
		h := msg.Header
		attempts, _ := strconv.Atoi(h.Get("Chapar-DLQ-Attempts"))
		key := h.Get("Chapar-DLQ-Sink") + "/" + h.Get(dlqEventIDHdr)
		b.recs[key] = append(b.recs[key], deadLetter{
			reason: h.Get(dlqReasonHdr), err: h.Get("Chapar-DLQ-Error"), attempts: attempts,
			first: tm(h, "Chapar-DLQ-First-Attempt"), last: tm(h, "Chapar-DLQ-Last-Attempt"), at: msg.Time, log: h.Get("Chapar-Attempt-Log"),
		})
	})
}
