// Package emulator is a local stand-in for every vendor API Chapar
// delivers to: one HTTP handler per vendor that validates requests as the
// vendor's docs say, answers the documented errors in the vendor's shape,
// records what it received, and injects faults on demand (status, latency,
// Retry-After) through a small control API:
//
//	GET    /_emulator/requests   what it received (JSON; the last MaxRecorded)
//	DELETE /_emulator/requests   forget it
//	POST   /_emulator/fault      {"status":503,"code":"…","latency":"200ms","retry_after":"2","count":0,"match":"…"}
//	DELETE /_emulator/fault      back to normal
//	GET    /_emulator/dropped    messages answered 2xx but dropped (JSON; Metrix gateway)
//
// The demo, the tests and the benchmarks use it; run it standalone with
// `dispatcher emulator`.
package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Handler is what an emulated vendor's file registers from init: one file
// per vendor (chabok.go, metrix.go, kenar.go, webhook.go), as in
// internal/sinks. A vendor's demo credentials live in its file only.
type Handler struct {
	// Name is the vendor's name, as in sinks[i].vendor.
	Name string
	// BasePath follows host:port in the base_url a sink uses ("/api").
	BasePath string
	// Listen is the default address of `dispatcher emulator`.
	Listen string
	// Demo are the settings of a sink the emulated API accepts by default
	// (its credentials, in sinks[i].settings keys): what configs/demo.yaml
	// and the tests use.
	Demo Settings
	// New builds the emulated API accepting s (Demo, or a test's).
	New func(s Settings) *Vendor
}

// Settings are sink settings (sinks[i].settings) as an emulated vendor
// accepts them; values are strings, lists or nested Settings, as in YAML.
type Settings = map[string]any

// handlers are the emulated vendors; like the sinks registry, written only
// from init.
var handlers = map[string]Handler{}

// Register adds an emulated vendor. Call it from init only.
func Register(h Handler) {
	if _, dup := handlers[h.Name]; dup || h.Name == "" || h.New == nil {
		panic("emulator: bad or repeated vendor " + h.Name)
	}
	handlers[h.Name] = h
}

// Handlers lists the emulated vendors by name.
func Handlers() []Handler {
	out := make([]Handler, 0, len(handlers))
	for _, h := range handlers {
		out = append(out, h)
	}
	slices.SortFunc(out, func(a, b Handler) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// DemoSettings are the settings of a sink the emulated vendor accepts by
// default (a fresh copy; nil for an unknown vendor).
func DemoSettings(vendor string) map[string]any {
	h, ok := handlers[vendor]
	if !ok || h.Demo == nil {
		return nil
	}
	return deepCopy(h.Demo).(map[string]any)
}

// Config is what each emulated vendor accepts, by vendor name; a vendor
// absent from it accepts its Demo settings.
type Config map[string]Settings

// DemoConfig is every vendor's Demo settings (fresh copies a test may
// change), what configs/demo.yaml is written against.
func DemoConfig() Config {
	cfg := Config{}
	for _, h := range Handlers() {
		cfg[h.Name] = DemoSettings(h.Name)
	}
	return cfg
}

// DemoEnv is every vendor's Demo settings as environment variables, the way
// configs/demo.yaml reads them: DEMO_<VENDOR>_<KEY> for each string value,
// nested keys and list indexes joined by _ (DEMO_CHABOK_ACCESS_TOKEN,
// DEMO_WEBHOOK_SIGNING_SECRETS_0).
func DemoEnv() map[string]string {
	env := map[string]string{}
	var walk func(name string, v any)
	walk = func(name string, v any) {
		switch x := v.(type) {
		case string:
			env[name] = x
		case map[string]any:
			for k, c := range x {
				walk(name+"_"+envName(k), c)
			}
		case []any:
			for i, c := range x {
				walk(fmt.Sprintf("%s_%d", name, i), c)
			}
		}
	}
	for _, h := range Handlers() {
		walk("DEMO_"+envName(h.Name), map[string]any(h.Demo))
	}
	return env
}

func envName(s string) string { return strings.ToUpper(strings.ReplaceAll(s, "-", "_")) }

func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		m := make(map[string]any, len(x))
		for k, c := range x {
			m[k] = deepCopy(c)
		}
		return m
	case []any:
		l := make([]any, len(x))
		for i, c := range x {
			l[i] = deepCopy(c)
		}
		return l
	}
	return v
}

// setting reads a string setting, "" when absent.
func setting(s Settings, key string) string {
	v, _ := s[key].(string)
	return v
}

// Request is one request a vendor received.
type Request struct {
	Method string          `json:"method"`
	Path   string          `json:"path"`
	Query  string          `json:"query,omitempty"`
	Header http.Header     `json:"header"`
	Body   json.RawMessage `json:"body,omitempty"`
	// Arrived is when the request reached the vendor's handler; At is
	// when it was answered (later by a fault's latency, and by however
	// late the machine ran that timer).
	Arrived time.Time `json:"arrived"`
	At      time.Time `json:"at"`
	Status  int       `json:"status"`
}

// Fault overrides a vendor's answers.
type Fault struct {
	Status     int           `json:"status"`
	Code       string        `json:"code,omitempty"`
	Latency    time.Duration `json:"-"`
	RetryAfter string        `json:"retry_after,omitempty"`
	// Count is how many requests the fault applies to (0: until cleared).
	Count int `json:"count,omitempty"`
	// Match, if set, limits the fault to requests whose body contains it:
	// one bad item (say "eventName":"poison") fails every request that
	// carries it, a bulk one whole, as the vendors answer.
	Match string `json:"match,omitempty"`
}

// answer is a vendor's reply to a valid or invalid request.
type answer struct {
	status int
	code   string
	msg    string
	body   any // a 2xx body other than the vendor's usual one
}

func accepted() answer { return answer{status: http.StatusOK} }

func fail(status int, code, format string, args ...any) answer {
	return answer{status: status, code: code, msg: fmt.Sprintf(format, args...)}
}

// StatusClientGone is the status recorded for a request whose client gave
// up before the vendor answered (a fault's Latency past the client's
// timeout): nginx's 499, "client closed request". Nothing was sent back.
const StatusClientGone = 499

// Vendor is one emulated API.
type Vendor struct {
	name     string
	validate func(r *http.Request, body []byte) answer
	errBody  func(a answer) any
	okBody   any

	mu sync.Mutex
	// recent holds the last MaxRecorded requests as a ring; oldest is the
	// index of the oldest once it is full.
	recent []Request
	oldest int
	// counts are exact, by status, however many requests recent forgot.
	counts map[int]int
	fault  *Fault
	// quota, if set, answers 429 to requests beyond a rate, as a vendor
	// enforcing an account's quota does.
	quota *rate.Limiter
	// timeline, if set, is what the vendor does with the requests it
	// accepts beyond answering them (the Metrix gateway drops a user's
	// second message at one time, answering 2xx all the same).
	timeline *timeline
	// inFlight counts requests being answered (InFlight).
	inFlight atomic.Int64
}

// InFlight is how many requests the vendor is answering now: arrived,
// not yet recorded.
func (v *Vendor) InFlight() int64 { return v.inFlight.Load() }

// SetQuota makes the vendor answer 429 (no Retry-After) to requests beyond
// perSecond with bursts of burst; 0 removes the quota.
func (v *Vendor) SetQuota(perSecond float64, burst int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.quota = nil
	if perSecond > 0 {
		v.quota = rate.NewLimiter(rate.Limit(perSecond), burst)
	}
}

func (v *Vendor) overQuota() bool {
	v.mu.Lock()
	q := v.quota
	v.mu.Unlock()
	return q != nil && !q.Allow()
}

// MaxRecorded is how many requests a vendor keeps for Requests: the most
// recent ones. Count stays exact beyond it.
const MaxRecorded = 10_000

// Emulator holds every vendor.
type Emulator struct {
	vendors map[string]*Vendor
	names   []string
}

// New builds the emulator.
func New(cfg Config) *Emulator {
	e := &Emulator{vendors: map[string]*Vendor{}}
	for _, h := range Handlers() {
		s, ok := cfg[h.Name]
		if !ok {
			s = DemoSettings(h.Name)
		}
		e.vendors[h.Name] = h.New(s)
		e.names = append(e.names, h.Name)
	}
	return e
}

// Vendor returns one vendor's handler and recorder.
func (e *Emulator) Vendor(name string) *Vendor { return e.vendors[name] }

// Names lists the vendors, sorted.
func (e *Emulator) Names() []string { return slices.Clone(e.names) }

// Requests returns a copy of the last MaxRecorded requests the vendor
// received, oldest first.
func (v *Vendor) Requests() []Request {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]Request, 0, len(v.recent))
	out = append(out, v.recent[v.oldest:]...)
	return append(out, v.recent[:v.oldest]...)
}

// Count returns how many requests the vendor answered with status (0: all),
// counting every request since the last Reset, recorded or not.
func (v *Vendor) Count(status int) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	if status != 0 {
		return v.counts[status]
	}
	n := 0
	for _, c := range v.counts {
		n += c
	}
	return n
}

// Reset forgets requests and counts, and clears any fault.
func (v *Vendor) Reset() {
	v.mu.Lock()
	v.recent, v.oldest, v.counts, v.fault = nil, 0, nil, nil
	v.mu.Unlock()
	if v.timeline != nil {
		v.timeline.reset()
	}
}

// Dropped lists the messages the vendor answered 2xx but dropped, oldest
// first (nil for a vendor that drops nothing).
func (v *Vendor) Dropped() []Dropped {
	if v.timeline == nil {
		return nil
	}
	return v.timeline.list()
}

// record counts a request and keeps it, forgetting the oldest once
// MaxRecorded are kept.
func (v *Vendor) record(r Request) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.counts == nil {
		v.counts = map[int]int{}
	}
	v.counts[r.Status]++
	if len(v.recent) < MaxRecorded {
		v.recent = append(v.recent, r)
		return
	}
	v.recent[v.oldest] = r
	v.oldest = (v.oldest + 1) % MaxRecorded
}

// SetFault makes the vendor answer f until cleared (or f.Count requests).
func (v *Vendor) SetFault(f Fault) {
	v.mu.Lock()
	v.fault = &f
	v.mu.Unlock()
}

// ClearFault restores normal answers.
func (v *Vendor) ClearFault() { v.mu.Lock(); v.fault = nil; v.mu.Unlock() }

func (v *Vendor) takeFault(body []byte) *Fault {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.fault == nil || v.fault.Match != "" && !bytes.Contains(body, []byte(v.fault.Match)) {
		return nil
	}
	f := *v.fault
	if v.fault.Count > 0 {
		v.fault.Count--
		if v.fault.Count == 0 {
			v.fault = nil
		}
	}
	return &f
}

// ServeHTTP answers as the vendor would, or serves the control API.
func (v *Vendor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_emulator/") {
		v.control(w, r)
		return
	}
	arrived := time.Now()
	v.inFlight.Add(1)
	defer v.inFlight.Add(-1)
	body, _ := io.ReadAll(io.LimitReader(r.Body, 4<<20))
	var a answer
	var retryAfter string
	if v.overQuota() {
		a = answer{status: http.StatusTooManyRequests, code: "TOO_MANY_REQUESTS", msg: "over the account's quota"}
	} else if f := v.takeFault(body); f != nil {
		if f.Latency > 0 {
			select {
			case <-time.After(f.Latency):
			case <-r.Context().Done():
				// The client gave up first (its timeout): still a request
				// the vendor received, recorded as nginx logs it.
				rec := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Arrived: arrived, At: time.Now(), Status: StatusClientGone}
				if json.Valid(body) {
					rec.Body = body
				}
				v.record(rec)
				return
			}
		}
		a = answer{status: f.Status, code: f.Code, msg: "injected fault"}
		retryAfter = f.RetryAfter
	} else {
		a = v.validate(r, body)
	}
	rec := Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Arrived: arrived, At: time.Now(), Status: a.status}
	if json.Valid(body) {
		rec.Body = body
	}
	v.record(rec)
	if v.timeline != nil && a.status >= 200 && a.status < 300 {
		v.timeline.accept(body)
	}

	w.Header().Set("Content-Type", "application/json")
	if retryAfter != "" {
		w.Header().Set("Retry-After", retryAfter)
	}
	w.WriteHeader(a.status)
	if a.status >= 200 && a.status < 300 {
		ok := v.okBody
		if a.body != nil {
			ok = a.body
		}
		_ = json.NewEncoder(w).Encode(ok)
		return
	}
	_ = json.NewEncoder(w).Encode(v.errBody(a))
}

type faultRequest struct {
	Status     int    `json:"status"`
	Code       string `json:"code"`
	Latency    string `json:"latency"`
	RetryAfter string `json:"retry_after"`
	Count      int    `json:"count"`
	Match      string `json:"match"`
}

func (v *Vendor) control(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.URL.Path == "/_emulator/requests" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v.Requests())
	case r.URL.Path == "/_emulator/dropped" && r.Method == http.MethodGet:
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(v.Dropped())
	case r.URL.Path == "/_emulator/requests" && r.Method == http.MethodDelete:
		v.Reset()
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/_emulator/fault" && r.Method == http.MethodPost:
		var fr faultRequest
		if err := json.NewDecoder(r.Body).Decode(&fr); err != nil || fr.Status < 100 || fr.Status > 599 {
			http.Error(w, `want {"status":503,"code":"…","latency":"200ms","retry_after":"2","count":0}`, http.StatusBadRequest)
			return
		}
		f := Fault{Status: fr.Status, Code: fr.Code, RetryAfter: fr.RetryAfter, Count: fr.Count, Match: fr.Match}
		if fr.Latency != "" {
			d, err := time.ParseDuration(fr.Latency)
			if err != nil {
				http.Error(w, "latency: "+err.Error(), http.StatusBadRequest)
				return
			}
			f.Latency = d
		}
		v.SetFault(f)
		w.WriteHeader(http.StatusNoContent)
	case r.URL.Path == "/_emulator/fault" && r.Method == http.MethodDelete:
		v.ClearFault()
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

// decodeObject reads a JSON object body, keeping numbers exact.
func decodeObject(body []byte) (map[string]any, bool) {
	dec := json.NewDecoder(strings.NewReader(string(body)))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil || m == nil {
		return nil, false
	}
	return m, true
}

func str(m map[string]any, k string) (string, bool) {
	s, ok := m[k].(string)
	return s, ok && s != ""
}

func isInt(v any) bool {
	n, ok := v.(json.Number)
	if !ok {
		return false
	}
	_, err := n.Int64()
	return err == nil
}

func isNumber(v any) bool { _, ok := v.(json.Number); return ok }

// looksLikeMillis tells epoch milliseconds from seconds (after 2001-09-09).
func looksLikeMillis(v any) bool {
	n, ok := v.(json.Number)
	if !ok {
		return false
	}
	i, err := n.Int64()
	return err == nil && i > 1_000_000_000_000
}

func stringMap(v any) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	for _, x := range m {
		if _, ok := x.(string); !ok {
			return false
		}
	}
	return true
}

func numberMap(v any) bool {
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	for _, x := range m {
		if !isNumber(x) {
			return false
		}
	}
	return true
}
