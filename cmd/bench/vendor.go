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

// vendorSink is one Chabok endpoint, one sink's vendor.
type vendorSink struct {
	chabok *emulator.Vendor
	url    string
	count  atomic.Int64 // requests answered
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
	rec := parseReceipt(v.sink, emulator.Request{Body: body, Status: sr.status, At: time.Now()})
	v.mu.Lock()
	v.recs = append(v.recs, rec)
	v.mu.Unlock()
	v.count.Add(1)
}

// vendors are the sinks' endpoints, served until ctx is done.
type vendors []*vendorSink

func startVendors(ctx context.Context, n int) (vendors, error) {
	var vs vendors
	for range n {
		ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		v := &vendorSink{
			sink:   len(vs),
			chabok: emulator.New(emulator.DemoConfig()).Vendor(emulator.Chabok),
			url:    emulator.BaseURL(emulator.Chabok, ln.Addr().String()),
		}
		srv := &http.Server{Handler: v, ReadHeaderTimeout: 5 * time.Second}
		go func() { _ = srv.Serve(ln) }()
		context.AfterFunc(ctx, func() { _ = srv.Close() })
		vs = append(vs, v)
	}
	return vs, nil
}

// prepare forgets what the first n endpoints received and makes each take
// latency per request (0: answer at once).
func (vs vendors) prepare(n int, latency time.Duration) vendors {
	vs = vs[:n]
	for _, v := range vs {
		v.chabok.Reset()
		v.count.Store(0)
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

func (vs vendors) received() int64 {
	var n int64
	for _, v := range vs {
		n += v.count.Load()
	}
	return n
}

// receipt is one request a vendor received, tied to the event it carried.
type receipt struct {
	sink   int
	seq    int  // benchSeq; probes are negative
	ok     bool // the request carried a bench event
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

func parseReceipt(sink int, r emulator.Request) receipt {
	rec := receipt{sink: sink, status: r.Status, at: r.At}
	var body struct {
		EventData struct {
			BenchSeq *int   `json:"benchSeq"`
			SentAt   string `json:"sentAt"`
		} `json:"eventData"`
	}
	if json.Unmarshal(r.Body, &body) != nil || body.EventData.BenchSeq == nil {
		return rec
	}
	ns, err := strconv.ParseInt(body.EventData.SentAt, 10, 64)
	if err != nil {
		return rec
	}
	rec.seq, rec.sent, rec.ok = *body.EventData.BenchSeq, time.Unix(0, ns), true
	return rec
}

// expected is what every sink must receive exactly once: events 0..n-1 and
// probes -1..-probes.
type expected struct{ events, probes int }

func (e expected) total() int { return e.events + e.probes }

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
		default:
			seen[r.sink][r.seq]++
		}
	}
	for sink, counts := range seen {
		var missing, dups []int
		for seq := -want.probes; seq < want.events; seq++ {
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

// await waits until every sink has received every expected event, and
// fails if the system under test exits or no request arrives for stall.
func (vs vendors) await(ctx context.Context, want expected, sys interface{ exitedEarly() error }, stall time.Duration) error {
	target := int64(want.total() * len(vs))
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
	for _, g := range got {
		for seq := -want.probes; seq < want.events; seq++ {
			if !g[seq] {
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
