package faults

// The vendor: an HTTP server in the test process that records every request
// per event id (the harness puts the envelope id in the event's properties,
// which Chabok receives as eventData.eid) and decides each answer: injected
// faults first, else the project's Chabok emulator validates the request
// and answers as Chabok would.

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/emulator"
)

const vendorToken = "faults-chabok-token"

// call is one request the vendor answered.
type call struct {
	at     time.Time
	status int
	tag    string // the base URL's /t/<tag> prefix: which sink or replica asked
}

// ledger is the vendor and its books.
type ledger struct {
	url string
	emu *emulator.Vendor

	mu      sync.Mutex
	calls   map[string][]call // per event id, in arrival order
	noID    int               // requests without an event id
	total   int
	emuSeen int

	// Faults, in the order they are checked.
	failIDs    map[string]int // these events always get this status
	outage     bool           // everything else: 503
	storm      int            // everything else: 429 with Retry-After: storm seconds (0: off)
	flakyEvery int            // every n-th request otherwise healthy: 503 (0: off)
	latency    time.Duration  // every answer takes this long
	notBefore  map[string]time.Time
	early      int // requests for an event before its Retry-After had passed
	earliest   time.Duration
	stormCalls int
}

func newLedger(t testing.TB) *ledger {
	cfg := emulator.DemoConfig()
	cfg[emulator.Chabok]["access_token"] = vendorToken
	l := &ledger{
		emu:       emulator.New(cfg).Vendor(emulator.Chabok),
		calls:     map[string][]call{},
		failIDs:   map[string]int{},
		notBefore: map[string]time.Time{},
	}
	srv := httptest.NewServer(l)
	t.Cleanup(srv.Close)
	l.url = srv.URL
	return l
}

func (l *ledger) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// A base URL of <vendor>/t/<tag> names the sink or replica that
	// asks; the emulator sees the path without it.
	tag := ""
	if rest, ok := strings.CutPrefix(r.URL.Path, "/t/"); ok {
		var p string
		tag, p, _ = strings.Cut(rest, "/")
		r.URL.Path = "/" + p
	}
	body, _ := io.ReadAll(r.Body)
	var req struct {
		EventData struct {
			EID string `json:"eid"`
		} `json:"eventData"`
	}
	_ = json.Unmarshal(body, &req)
	id := req.EventData.EID

	l.mu.Lock()
	latency := l.latency
	l.mu.Unlock()
	if latency > 0 {
		select {
		case <-time.After(latency):
		case <-r.Context().Done():
			return
		}
	}

	now := time.Now()
	l.mu.Lock()
	l.total++
	if nb, ok := l.notBefore[id]; ok && now.Before(nb) {
		l.early++
		l.earliest = max(l.earliest, nb.Sub(now))
	}
	status, retryAfter := 0, 0
	switch {
	case l.failIDs[id] != 0:
		status = l.failIDs[id]
	case l.outage:
		status = http.StatusServiceUnavailable
	case l.storm > 0:
		status, retryAfter = http.StatusTooManyRequests, l.storm
		l.notBefore[id] = now.Add(time.Duration(retryAfter) * time.Second)
		l.stormCalls++
	case l.flakyEvery > 0 && l.total%l.flakyEvery == 0:
		status = http.StatusServiceUnavailable
	}
	l.mu.Unlock()

	if status == 0 {
		// No fault: the emulator answers. It keeps every request it saw;
		// forget them now and then, the ledger has what it needs.
		rec := httptest.NewRecorder()
		r.Body = io.NopCloser(bytes.NewReader(body))
		l.emu.ServeHTTP(rec, r)
		status = rec.Code
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		_, _ = w.Write(rec.Body.Bytes())
		l.mu.Lock()
		if l.emuSeen++; l.emuSeen%5000 == 0 {
			l.emu.Reset()
		}
		l.mu.Unlock()
	} else {
		w.Header().Set("Content-Type", "application/json")
		if retryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(retryAfter))
		}
		w.WriteHeader(status)
		_, _ = w.Write([]byte(`{"error":{"name":"Error","status":` + strconv.Itoa(status) + `,"message":"injected fault","code":"INJECTED"}}`))
	}

	l.mu.Lock()
	if id == "" {
		l.noID++
	} else {
		l.calls[id] = append(l.calls[id], call{at: now, status: status, tag: tag})
	}
	l.mu.Unlock()
}

// set changes the vendor's faults under its lock.
func (l *ledger) set(f func(l *ledger)) {
	l.mu.Lock()
	f(l)
	l.mu.Unlock()
}

// requests is how many requests the vendor answered so far.
func (l *ledger) requests() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// delivery is what the vendor knows about one event.
type delivery struct {
	calls     int
	ok        int       // 2xx answers
	firstOK   time.Time // zero if never
	lastCall  time.Time
	firstCall time.Time
}

func (l *ledger) event(id string) delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	return summarize(l.calls[id])
}

func summarize(cs []call) delivery {
	var d delivery
	for _, c := range cs {
		d.calls++
		if d.firstCall.IsZero() {
			d.firstCall = c.at
		}
		d.lastCall = c.at
		if c.status >= 200 && c.status < 300 {
			if d.ok == 0 {
				d.firstOK = c.at
			}
			d.ok++
		}
	}
	return d
}

// snapshot copies every event's summary.
func (l *ledger) snapshot() map[string]delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]delivery, len(l.calls))
	for id, cs := range l.calls {
		out[id] = summarize(cs)
	}
	return out
}

// snapshotTag is snapshot for the requests of one tag.
func (l *ledger) snapshotTag(tag string) map[string]delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]delivery, len(l.calls))
	for id, cs := range l.calls {
		var mine []call
		for _, c := range cs {
			if c.tag == tag {
				mine = append(mine, c)
			}
		}
		if len(mine) > 0 {
			out[id] = summarize(mine)
		}
	}
	return out
}

// okTags lists, per event, the tag of every 2xx answer, in arrival order.
func (l *ledger) okTags() map[string][]call {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string][]call{}
	for id, cs := range l.calls {
		for _, c := range cs {
			if c.status >= 200 && c.status < 300 {
				out[id] = append(out[id], c)
			}
		}
	}
	return out
}

// okBetween counts 2xx answers given in [from, to).
func (l *ledger) okBetween(from, to time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, cs := range l.calls {
		for _, c := range cs {
			if c.status >= 200 && c.status < 300 && !c.at.Before(from) && c.at.Before(to) {
				n++
			}
		}
	}
	return n
}

// callsBetween counts requests that arrived in [from, to).
func (l *ledger) callsBetween(from, to time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, cs := range l.calls {
		for _, c := range cs {
			if !c.at.Before(from) && c.at.Before(to) {
				n++
			}
		}
	}
	return n
}

// firstOKAfter is when the vendor first answered 2xx after t (zero if not).
func (l *ledger) firstOKAfter(t time.Time) time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	var first time.Time
	for _, cs := range l.calls {
		for _, c := range cs {
			if c.status >= 200 && c.status < 300 && c.at.After(t) && (first.IsZero() || c.at.Before(first)) {
				first = c.at
			}
		}
	}
	return first
}
