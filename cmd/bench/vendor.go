package main

// Vendor receipt checking: one emulated Chabok endpoint per sink (the
// emulator from internal/emulator, in this process), a count of what each
// received, and the check that every event arrived exactly once.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chapar-dev/chapar/internal/emulator"
)

// chabokToken is the access token the emulated Chabok accepts.
const chabokToken = "demo-chabok-token"

// vendorSink is one Chabok endpoint, one sink's vendor, or the Metrix
// gateway's (the batching scenarios).
type vendorSink struct {
	chabok *emulator.Vendor // the emulated vendor, Chabok or the Metrix gateway
	kind   string           // emulator.Chabok or emulator.MetrixGateway
	url    string
	count  atomic.Int64 // requests answered
	// carried counts accepted requests that carried bench events: events
	// per request is receipts over it.
	carried  atomic.Int64
	recorded atomic.Int64 // receipts: events received (a batch is many), and requests that carried none
	// The bench keeps every receipt itself: the emulator keeps only its
	// last emulator.MaxRecorded requests.
	mu   sync.Mutex
	recs []receipt
	sink int
}

// statusRecorder remembers the status the emulator answered with.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) { s.status = code; s.ResponseWriter.WriteHeader(code) }

func (v *vendorSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	sr := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	v.chabok.ServeHTTP(sr, r)
	recs := parseReceipts(v.kind, v.sink, emulator.Request{Body: body, Status: sr.status, At: time.Now()})
	v.mu.Lock()
	v.recs = append(v.recs, recs...)
	v.mu.Unlock()
	if recs[0].ok && recs[0].seq >= 0 && sr.status == http.StatusOK {
		v.carried.Add(1)
	}
	v.recorded.Add(int64(len(recs)))
	v.count.Add(1)
}

// vendors are the sinks' endpoints, served until ctx is done.
type vendors []*vendorSink

func startVendors(ctx context.Context, n int) (vendors, error) {
	var vs vendors
	for range n {
		v, err := startVendor(ctx, emulator.Chabok, len(vs))
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	return vs, nil
}

// startVendor serves one emulated vendor of kind as sink number sink.
func startVendor(ctx context.Context, kind string, sink int) (*vendorSink, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	v := &vendorSink{
		sink:   sink,
		kind:   kind,
		chabok: emulator.New(emulator.DemoConfig()).Vendor(kind),
		url:    emulator.BaseURL(kind, ln.Addr().String()),
	}
	srv := &http.Server{Handler: v, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	context.AfterFunc(ctx, func() { _ = srv.Close() })
	return v, nil
}

// prepare forgets what the first n endpoints received and makes each take
// latency per request (0: answer at once).
func (vs vendors) prepare(n int, latency time.Duration) vendors {
	vs = vs[:n]
	for _, v := range vs {
		v.chabok.Reset()
		v.count.Store(0)
		v.carried.Store(0)
		v.recorded.Store(0)
		v.mu.Lock()
		v.recs = nil
		v.mu.Unlock()
		if latency > 0 {
			v.chabok.SetFault(emulator.Fault{Status: http.StatusOK, Latency: latency})
		}
	}
	return vs
}

func (vs vendors) urls() []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.url)
	}
	return out
}

// received counts the receipts: the events the vendors received (a batch
// is many), and the requests that carried none.
func (vs vendors) received() int64 {
	var n int64
	for _, v := range vs {
		n += v.recorded.Load()
	}
	return n
}

// requestsCarrying is how many accepted requests carried bench events.
func (vs vendors) requestsCarrying() int64 {
	var n int64
	for _, v := range vs {
		n += v.carried.Load()
	}
	return n
}

// receipt is one event a vendor received in a request (a request that
// carried none is one receipt, not ok).
type receipt struct {
	sink   int
	user   string // the request's user (the Metrix gateway's customUserId)
	seq    int    // benchSeq; probes are negative
	ok     bool   // the request carried a bench event
	status int
	sent   time.Time // the publisher's stamp
	at     time.Time // the vendor's receipt
}

func (vs vendors) receipts() []receipt {
	var out []receipt
	for _, v := range vs {
		v.mu.Lock()
		out = append(out, v.recs...)
		v.mu.Unlock()
	}
	return out
}

// parseReceipts reads the events a request carried: Chabok's one event
// or trackBulk's array of them, or the Metrix gateway's messages (the
// attributes are strings there; the registering "user" message is none).
func parseReceipts(kind string, sink int, r emulator.Request) []receipt {
	bad := []receipt{{sink: sink, status: r.Status, at: r.At}}
	var out []receipt
	add := func(user, seq, sentAt string) bool {
		s, err1 := strconv.Atoi(seq)
		ns, err2 := strconv.ParseInt(sentAt, 10, 64)
		if err1 != nil || err2 != nil {
			return false
		}
		out = append(out, receipt{sink: sink, user: user, seq: s, ok: true, status: r.Status, sent: time.Unix(0, ns), at: r.At})
		return true
	}
	if kind == emulator.Webhook {
		// The CloudEvent as structured JSON, or an array of them.
		type item struct {
			Data struct {
				Properties struct {
					BenchSeq json.Number `json:"benchSeq"`
					SentAt   string      `json:"sentAt"`
				} `json:"properties"`
			} `json:"data"`
		}
		var items []item
		if bytes.HasPrefix(bytes.TrimSpace(r.Body), []byte("[")) {
			if json.Unmarshal(r.Body, &items) != nil {
				return bad
			}
		} else {
			var one item
			if json.Unmarshal(r.Body, &one) != nil {
				return bad
			}
			items = []item{one}
		}
		for _, it := range items {
			if !add("", it.Data.Properties.BenchSeq.String(), it.Data.Properties.SentAt) {
				return bad
			}
		}
	} else if kind == emulator.MetrixGateway {
		var body struct {
			CustomUserID string `json:"customUserId"`
			Messages     []struct {
				Type       string            `json:"type"`
				Attributes map[string]string `json:"attributes"`
			} `json:"messages"`
		}
		if json.Unmarshal(r.Body, &body) != nil {
			return bad
		}
		for _, m := range body.Messages {
			if m.Type == "user" {
				continue
			}
			if !add(body.CustomUserID, m.Attributes["benchSeq"], m.Attributes["sentAt"]) {
				return bad
			}
		}
	} else {
		type item struct {
			EventData struct {
				BenchSeq json.Number `json:"benchSeq"`
				SentAt   string      `json:"sentAt"`
			} `json:"eventData"`
		}
		var items []item
		if bytes.HasPrefix(bytes.TrimSpace(r.Body), []byte("[")) {
			if json.Unmarshal(r.Body, &items) != nil {
				return bad
			}
		} else {
			var one item
			if json.Unmarshal(r.Body, &one) != nil {
				return bad
			}
			items = []item{one}
		}
		for _, it := range items {
			if !add("", it.EventData.BenchSeq.String(), it.EventData.SentAt) {
				return bad
			}
		}
	}
	if len(out) == 0 {
		return bad
	}
	return out
}

// usersOutOfOrder counts the users whose events the Metrix gateway
// accepted in another order than published (seq rises with publish
// order); 0 for Chabok, whose requests name no user.
func usersOutOfOrder(recs []receipt) int {
	last := map[string]int{}
	broken := map[string]bool{}
	for _, r := range recs {
		if !r.ok || r.seq < 0 || r.status != http.StatusOK || r.user == "" {
			continue // Chabok's requests name no user
		}
		if prev, ok := last[r.user]; ok && r.seq < prev {
			broken[r.user] = true
		}
		last[r.user] = r.seq
	}
	return len(broken)
}

// expected is what every sink must receive exactly once: events 0..n-1 and
// probes -1..-probes; with split, sink k only the events seq with seq mod
// split = k (and every probe).
type expected struct{ events, probes, split int }

func (e expected) total() int { return e.events + e.probes }

// wants reports whether sink must receive event seq.
func (e expected) wants(sink, seq int) bool {
	return e.split == 0 || seq < 0 || seq%e.split == sink
}

// receipts is how many receipts sinks sinks must have in all.
func (e expected) receipts(sinks int) int {
	if e.split > 0 {
		return e.events + e.probes*sinks
	}
	return e.total() * sinks
}

// checkExactlyOnce reports every way the receipts differ from exactly one
// accepted request per expected event per sink.
func checkExactlyOnce(recs []receipt, sinks int, want expected) error {
	seen := make([]map[int]int, sinks)
	for i := range seen {
		seen[i] = make(map[int]int, want.total())
	}
	var problems []string
	for _, r := range recs {
		switch {
		case !r.ok:
			problems = append(problems, fmt.Sprintf("sink %d: a request that carries no bench event (status %d)", r.sink, r.status))
		case r.status != http.StatusOK:
			problems = append(problems, fmt.Sprintf("sink %d: event %d answered %d: the request is not what Chabok accepts", r.sink, r.seq, r.status))
		case r.seq < -want.probes || r.seq >= want.events:
			problems = append(problems, fmt.Sprintf("sink %d: event %d was never published in this run", r.sink, r.seq))
		case !want.wants(r.sink, r.seq):
			problems = append(problems, fmt.Sprintf("sink %d: event %d is routed to another sink", r.sink, r.seq))
		default:
			seen[r.sink][r.seq]++
		}
	}
	for sink, counts := range seen {
		var missing, dups []int
		for seq := -want.probes; seq < want.events; seq++ {
			if !want.wants(sink, seq) {
				continue
			}
			switch n := counts[seq]; {
			case n == 0:
				missing = append(missing, seq)
			case n > 1:
				dups = append(dups, seq)
			}
		}
		if len(missing) > 0 {
			problems = append(problems, fmt.Sprintf("sink %d: %d events never arrived (e.g. %v)", sink, len(missing), missing[:min(5, len(missing))]))
		}
		if len(dups) > 0 {
			problems = append(problems, fmt.Sprintf("sink %d: %d events arrived more than once (e.g. %v)", sink, len(dups), dups[:min(5, len(dups))]))
		}
	}
	if len(problems) == 0 {
		return nil
	}
	if len(problems) > 10 {
		problems = append(problems[:10], fmt.Sprintf("… and %d more", len(problems)-10))
	}
	return fmt.Errorf("exactly-once check failed at the vendor:\n  %s", strings.Join(problems, "\n  "))
}

// awaitFirst waits until a vendor has received something, and fails if the
// system under test exits or nothing arrives for stall.
func (vs vendors) awaitFirst(ctx context.Context, sys interface{ exitedEarly() error }, stall time.Duration) error {
	deadline := time.Now().Add(stall)
	for vs.received() == 0 {
		if err := sys.exitedEarly(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no vendor request in %s", stall)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
	return nil
}

// await waits until every sink has received every expected event, and
// fails if the system under test exits or no request arrives for stall.
func (vs vendors) await(ctx context.Context, want expected, sys interface{ exitedEarly() error }, stall time.Duration) error {
	target := int64(want.receipts(len(vs)))
	last, lastChange := int64(-1), time.Now()
	checked := int64(-1)
	for {
		n := vs.received()
		if n != last {
			last, lastChange = n, time.Now()
		}
		// Enough requests: done unless some were duplicates, in which
		// case wait for more (checking again only when the count moves).
		if n >= target && n != checked {
			checked = n
			if complete(vs.receipts(), len(vs), want) {
				return nil
			}
		}
		if err := sys.exitedEarly(); err != nil {
			return err
		}
		if time.Since(lastChange) > stall {
			return fmt.Errorf("stalled: no vendor request for %s, %d of %d received; %v", stall, n, target,
				checkExactlyOnce(vs.receipts(), len(vs), want))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// complete says whether every sink has every expected event at least once.
func complete(recs []receipt, sinks int, want expected) bool {
	got := make([]map[int]bool, sinks)
	for i := range got {
		got[i] = map[int]bool{}
	}
	for _, r := range recs {
		if r.ok && r.status == http.StatusOK {
			got[r.sink][r.seq] = true
		}
	}
	for sink, g := range got {
		for seq := -want.probes; seq < want.events; seq++ {
			if !g[seq] && want.wants(sink, seq) {
				return false
			}
		}
	}
	return true
}

// span is the time from the first request for an event (not a probe) to
// the last receipt, and how many receipts that covers. The vendor records
// a request when it answers, latency after it arrived.
func span(recs []receipt, latency time.Duration) (time.Duration, int) {
	var first, last time.Time
	n := 0
	for _, r := range recs {
		if !r.ok || r.seq < 0 {
			continue
		}
		n++
		if first.IsZero() || r.at.Before(first) {
			first = r.at
		}
		if r.at.After(last) {
			last = r.at
		}
	}
	return last.Sub(first) + latency, n
}

// latencies are publish → vendor receipt times of the events (not probes),
// sorted.
func latencies(recs []receipt) []time.Duration {
	var out []time.Duration
	for _, r := range recs {
		if r.ok && r.seq >= 0 {
			out = append(out, r.at.Sub(r.sent))
		}
	}
	slices.Sort(out)
	return out
}
