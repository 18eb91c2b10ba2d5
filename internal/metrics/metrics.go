// Package metrics exposes what the dispatcher does to Prometheus, and
// serves the admin endpoints: /metrics, /healthz and /readyz.
package metrics

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Metrics implements dispatch.Observer with Prometheus collectors.
//
// Label values are never taken on trust: a sink that is not one of the
// process's configured sinks (a producer names any destination it likes),
// an event type that is neither Chapar's nor named by a route, a reason, code or stage
// that does not look like one, and a vendor's code past the first
// maxCodesPerSink a sink has seen are counted as "other", so no input can
// panic a method (Prometheus refuses invalid UTF-8) or grow a metric
// without bound.
type Metrics struct {
	reg          *prometheus.Registry
	types        map[string]bool // Chapar's types and the routes', the only type labels
	sinks        map[string]bool // the configured sinks and "-", the only sink labels
	codes        codeBook        // the vendor codes kept as labels, per sink
	received     prometheus.Counter
	unrouted     *prometheus.CounterVec
	filterFailed *prometheus.CounterVec
	delivered    *prometheus.CounterVec
	retried      *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	requests     *prometheus.HistogramVec
	inFlight     *prometheus.GaugeVec
	unsettled    *prometheus.GaugeVec
	breaker      *prometheus.GaugeVec
	dropped      *prometheus.CounterVec
	panics       *prometheus.CounterVec
	pace         *prometheus.GaugeVec
	fenced       *prometheus.GaugeVec
	paused       *prometheus.GaugeVec
	opsEvents    *prometheus.CounterVec
	losses       *prometheus.CounterVec
	lost         *prometheus.GaugeVec

	// lostMu guards lostBy: each sink's consumers found gone and not yet
	// recreated, which /readyz reports.
	lostMu sync.Mutex
	lostBy map[string]int
	// fencedBy are the sinks another replica's config owns now (also
	// under lostMu), which /readyz reports.
	fencedBy map[string]bool
	// pausedBy are the sinks an operator has paused now (also
	// chapar_sink_paused), named by /readyz.
	pausedBy map[string]bool

	buildInfoMu sync.Mutex
	buildInfo   prometheus.Gauge // SetBuildInfo's

	// perSink caches each sink's series on the hot path (one delivery
	// touches five), so a delivery does not hash labels five times.
	perSink sync.Map // sink label → *sinkSeries

	status sinkBook // the console's per-sink status (sinkstatus.go)
}

// sinkSeries are one sink's series that every delivery touches.
type sinkSeries struct {
	delivered prometheus.Counter
	latency   prometheus.Observer
	inFlight  prometheus.Gauge
	requestOK prometheus.Observer
}

// series returns the sink's cached series. Only the configured sinks are
// cached (a bounded set); others fall back to "other".
func (m *Metrics) series(sink string) *sinkSeries {
	if s, ok := m.perSink.Load(sink); ok {
		return s.(*sinkSeries)
	}
	label := m.sinkLabel(sink)
	s := &sinkSeries{
		delivered: counter(m.delivered, label),
		latency:   observer(m.latency, label),
		inFlight:  gauge(m.inFlight, label),
		requestOK: observer(m.requests, label, "ok"),
	}
	if label == sink {
		m.perSink.Store(sink, s)
	}
	return s
}

// New registers Chapar's collectors (and the Go and process ones) in a
// registry of its own. sinks are the process's configured sinks: the only
// sink names its series carry (any other is "other").
func New(sinks ...string) *Metrics { return NewFor(sinks, nil) }

// NewFor is New with the event types the config's routes name: with
// Chapar's own types, the only type labels (a producer's other types are
// "other", so they cannot mint series).
func NewFor(sinks, types []string) *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		reg:   reg,
		types: map[string]bool{},
		sinks: map[string]bool{noSink: true},
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chapar_events_received_total", Help: "Events taken from the events stream (first deliveries, counted once per process by its lead sink: docs/design.md, The lead)."}),
		unrouted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chapar_events_unrouted_total", Help: "Valid events no route matched."}, []string{"type"}),
		filterFailed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chapar_route_filter_failures_total", Help: "Events a route's filter could not be evaluated on (a field absent or of another type): the route did not match them."}, []string{"route"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chapar_deliveries_total", Help: "Deliveries the vendor accepted (2xx) and Chapar acked."}, []string{"sink"}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chapar_retries_scheduled_total", Help: "Retries scheduled: transient failures whose next attempt is stored in the retries stream."}, []string{"sink", "status"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chapar_dead_letters_total", Help: "Dead letters written."}, []string{"sink", "reason", "status", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "chapar_delivery_latency_seconds", Help: "From the event's arrival in JetStream to the vendor's 2xx.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16)}, []string{"sink"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "chapar_vendor_request_seconds", Help: "Requests sent to a vendor, by how they ended: ok (2xx), transient (retryable status or network failure), permanent (any other status), error (cut short). Events rejected before any request are not counted.",
			Buckets: prometheus.DefBuckets}, []string{"sink", "outcome"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "chapar_in_flight", Help: "Vendor requests in progress."}, []string{"sink"}),
		unsettled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "chapar_unsettled", Help: "Events whose outcome is decided but whose ack or dead-letter write is not yet confirmed."}, []string{"sink"}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "chapar_breaker_state", Help: "Circuit breaker state: 0 closed, 1 half-open, 2 open."}, []string{"sink"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chapar_dropped_total", Help: "Messages Chapar decided not to deliver that are not dead letters (unrouted, say)."}, []string{"reason"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chapar_panics_total", Help: "Panics recovered, by the stage they happened in."}, []string{"stage"}),
	}
	for _, t := range envelope.Types() {
		m.types[t] = true
	}
	for _, t := range types {
		// The routes' types are the operator's, a bounded set; one that
		// is no type (config check refuses it) is never a label.
		if envelope.CheckType(t) == nil {
			m.types[t] = true
		}
	}
	for _, s := range sinks {
		if envelope.IsSinkName(s) {
			m.sinks[s] = true
		}
	}
	m.status.known = m.sinks
	m.pace = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "chapar_sink_rate_limit", Help: "A sink's current pace in requests a second (its rate_limit, lowered by 429s)."}, []string{"sink"})
	reg.MustRegister(m.pace)
	m.fenced = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "chapar_sink_fenced", Help: "1 while another replica's config owns the sink (a rolling deploy that changes its routes): this replica does not consume it."}, []string{"sink"})
	reg.MustRegister(m.fenced)
	m.paused = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "chapar_sink_paused", Help: "1 while an operator has the sink paused (dispatcher sinks pause): it delivers nothing, its events and retries wait."}, []string{"sink"})
	reg.MustRegister(m.paused)
	m.opsEvents = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chapar_ops_events_total", Help: "Operational events (chapar.ops.*) by type and what became of them: published, suppressed (rate limit; counted in a chapar.ops.suppressed event), dropped (queue full), failed (publish failed)."}, []string{"type", "outcome"})
	reg.MustRegister(m.opsEvents)
	m.lostBy, m.fencedBy, m.pausedBy = map[string]int{}, map[string]bool{}, map[string]bool{}
	m.losses = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "chapar_consumer_losses_total", Help: "A sink's durable consumers this process found gone (deleted, or lost with a server) and recreated where they were."}, []string{"sink"})
	m.lost = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "chapar_consumers_lost", Help: "A sink's durable consumers found gone and not yet recreated; /readyz is not ready meanwhile."}, []string{"sink"})
	reg.MustRegister(m.losses, m.lost)
	reg.MustRegister(m.received, m.unrouted, m.filterFailed, m.delivered, m.retried, m.deadLettered, m.latency, m.requests,
		m.inFlight, m.unsettled, m.breaker, m.dropped, m.panics)
	return m
}

// other stands for every label value that is not a known or well-formed one.
const other = "other"

var identifier = regexp.MustCompile(`^(?:[A-Z0-9_]{1,64}|[a-z0-9_]{1,64})$`)

// noSink is the sink of dead letters of invalid envelopes, which reached
// no sink (dlq.NoSink).
const noSink = "-"

// sinkLabel is one of the configured sinks, or "-" (dead letters of
// invalid envelopes). Well-formed is not enough: a producer names any
// destination it likes, and each unknown one is dead-lettered under its
// own name.
func (m *Metrics) sinkLabel(s string) string {
	if m.sinks[s] {
		return s
	}
	return other
}

// identLabel is an UPPER_SNAKE or lower_snake identifier of at most 64
// bytes: a reason, a stage.
func identLabel(s string) string {
	if identifier.MatchString(s) {
		return s
	}
	return other
}

// codeLabel is a vendor's error code, an identifier as identLabel, or empty
// when the vendor gave none.
func codeLabel(s string) string {
	if s == "" {
		return s
	}
	return identLabel(s)
}

// maxCodesPerSink bounds the distinct vendor codes a sink's dead letters
// are labelled with. A vendor's code is its own, but some come from text
// that can echo what a producer sent (Chabok's "INVALID_EVENT: ..."
// prefix, a generic webhook's code pointer): past the first ones a sink
// has seen, the rest are "other". A vendor's documented error table is
// far shorter than this.
const maxCodesPerSink = 32

// codeBook keeps, per sink label, the vendor codes used as labels so far.
// Its zero value is ready for use.
type codeBook struct {
	mu     sync.Mutex
	bySink map[string]map[string]bool
}

// label is code if the sink has used it before or has room for one more,
// else "other". The empty code (none given) is always kept.
func (b *codeBook) label(sink, code string) string {
	if code == "" || code == other {
		return code
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.bySink == nil {
		b.bySink = map[string]map[string]bool{}
	}
	codes := b.bySink[sink]
	if codes == nil {
		codes = map[string]bool{}
		b.bySink[sink] = codes
	}
	if !codes[code] && len(codes) >= maxCodesPerSink {
		return other
	}
	codes[code] = true
	return code
}

// statusLabel is an HTTP status, or 0 for none.
func statusLabel(status int) string {
	if status == 0 || (status >= 100 && status <= 599) {
		return strconv.Itoa(status)
	}
	return other
}

func (m *Metrics) typeLabel(t string) string {
	if m.types[t] {
		return t
	}
	return other
}

// The vectors' labels are sanitized, so these lookups cannot fail; should
// one, the observation is dropped rather than panicking a delivery.

func counter(v *prometheus.CounterVec, labels ...string) prometheus.Counter {
	if c, err := v.GetMetricWithLabelValues(labels...); err == nil {
		return c
	}
	return nil
}

func gauge(v *prometheus.GaugeVec, labels ...string) prometheus.Gauge {
	if g, err := v.GetMetricWithLabelValues(labels...); err == nil {
		return g
	}
	return nil
}

func observer(v *prometheus.HistogramVec, labels ...string) prometheus.Observer {
	if o, err := v.GetMetricWithLabelValues(labels...); err == nil {
		return o
	}
	return nil
}

func inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}

func add(g prometheus.Gauge, delta float64) {
	if g != nil {
		g.Add(delta)
	}
}

func observe(o prometheus.Observer, v float64) {
	if o != nil {
		o.Observe(v)
	}
}

func (m *Metrics) Received() { m.received.Inc() }

func (m *Metrics) Unrouted(eventType, _ string) { inc(counter(m.unrouted, m.typeLabel(eventType))) }

// FilterFailed counts an event route's filter failed on; route is a
// config key (routes[i]), a bounded set.
func (m *Metrics) FilterFailed(route string) { inc(counter(m.filterFailed, route)) }

func (m *Metrics) Delivered(sink string, d time.Duration) {
	s := m.series(sink)
	inc(s.delivered)
	observe(s.latency, d.Seconds())
	m.status.delivered(sink)
}

func (m *Metrics) Retried(sink string, status int) {
	inc(counter(m.retried, m.sinkLabel(sink), statusLabel(status)))
	m.status.retried(sink)
}

func (m *Metrics) DeadLettered(sink, reason string, status int, code string) {
	label := m.sinkLabel(sink)
	inc(counter(m.deadLettered, label, identLabel(reason), statusLabel(status), m.codes.label(label, codeLabel(code))))
	m.status.deadLettered(sink, reason, status, code)
}

func (m *Metrics) BreakerChanged(sink string, to retry.State) {
	m.status.breakerChanged(sink, to)
	if g := gauge(m.breaker, m.sinkLabel(sink)); g != nil {
		g.Set(float64(to))
	}
}

func (m *Metrics) InFlight(sink string, delta int) {
	add(m.series(sink).inFlight, float64(delta))
}

// Unsettled moves the count of a sink's events whose outcome is decided
// (delivered, to retry, or to dead-letter) but whose ack or dead-letter
// write JetStream has not yet confirmed.
// SinkFenced says whether another replica's config owns a sink.
func (m *Metrics) SinkFenced(sink string, fenced bool) {
	v := 0.0
	if fenced {
		v = 1
	}
	if g := gauge(m.fenced, m.sinkLabel(sink)); g != nil {
		g.Set(v)
	}
	m.lostMu.Lock()
	defer m.lostMu.Unlock()
	if fenced {
		m.fencedBy[m.sinkLabel(sink)] = true
	} else {
		delete(m.fencedBy, m.sinkLabel(sink))
	}
}

// SinkPaused says whether an operator has a sink paused.
// OpsEvent counts one operational event by its outcome (opsevents.Counts).
// Its type is one of envelope.OpsTypes, a bounded set.
func (m *Metrics) OpsEvent(eventType, outcome string) {
	if !envelope.IsOpsType(eventType) {
		eventType = "other"
	}
	m.opsEvents.WithLabelValues(eventType, outcome).Inc()
}

func (m *Metrics) SinkPaused(sink string, paused bool) {
	v := 0.0
	if paused {
		v = 1
	}
	if g := gauge(m.paused, m.sinkLabel(sink)); g != nil {
		g.Set(v)
	}
	m.lostMu.Lock()
	defer m.lostMu.Unlock()
	if paused {
		m.pausedBy[m.sinkLabel(sink)] = true
	} else {
		delete(m.pausedBy, m.sinkLabel(sink))
	}
}

// pausedSinks lists the sinks an operator has paused, sorted.
func (m *Metrics) pausedSinks() []string {
	m.lostMu.Lock()
	defer m.lostMu.Unlock()
	return slices.Sorted(maps.Keys(m.pausedBy))
}

// RateLimit sets a sink's current pace.
func (m *Metrics) RateLimit(sink string, perSecond float64) {
	if g := gauge(m.pace, m.sinkLabel(sink)); g != nil {
		g.Set(perSecond)
	}
}

func (m *Metrics) Unsettled(sink string, delta int) {
	add(gauge(m.unsettled, m.sinkLabel(sink)), float64(delta))
}

// ConsumerLost counts one of a sink's consumers found gone; the sink is not
// ready (/readyz) until as many ConsumerBack.
func (m *Metrics) ConsumerLost(sink string) {
	label := m.sinkLabel(sink)
	inc(counter(m.losses, label))
	add(gauge(m.lost, label), 1)
	m.lostMu.Lock()
	m.lostBy[label]++
	m.lostMu.Unlock()
}

// ConsumerBack says a lost consumer of the sink exists again.
func (m *Metrics) ConsumerBack(sink string) {
	label := m.sinkLabel(sink)
	add(gauge(m.lost, label), -1)
	m.lostMu.Lock()
	defer m.lostMu.Unlock()
	if m.lostBy[label]--; m.lostBy[label] <= 0 {
		delete(m.lostBy, label)
	}
}

// fencedSinks lists the sinks another replica's config owns, sorted.
func (m *Metrics) fencedSinks() []string {
	m.lostMu.Lock()
	defer m.lostMu.Unlock()
	return slices.Sorted(maps.Keys(m.fencedBy))
}

// lostSinks lists the sinks with a consumer gone, sorted.
func (m *Metrics) lostSinks() []string {
	m.lostMu.Lock()
	defer m.lostMu.Unlock()
	return slices.Sorted(maps.Keys(m.lostBy))
}

// Dropped counts a message Chapar decided not to deliver that is not a dead
// letter, by why (unrouted, say).
func (m *Metrics) Dropped(reason string) { inc(counter(m.dropped, identLabel(reason))) }

// Panicked counts a panic recovered in stage (router, worker, say).
func (m *Metrics) Panicked(stage string) { inc(counter(m.panics, identLabel(stage))) }

func (m *Metrics) VendorRequest(sink string, took time.Duration, err error) {
	if err == nil {
		observe(m.series(sink).requestOK, took.Seconds())
		return
	}
	// The console's last error: every failure, a request or not (an
	// unmapped event is what the operator needs to see too).
	m.status.requestFailed(sink, err)
	var outcome string
	var serr *sinks.Error
	switch {
	case errors.As(err, &serr) && serr.Transient:
		outcome = "transient"
	case errors.As(err, &serr) && serr.Status == 0:
		// A permanent failure without a status was found before any
		// request (an unmapped or unsupported event): no request to time.
		return
	case errors.As(err, &serr):
		outcome = "permanent"
	default:
		outcome = "error"
	}
	observe(observer(m.requests, m.sinkLabel(sink), outcome), took.Seconds())
}

// WatchConsumers adds gauges of each consumer's messages not yet delivered
// (chapar_consumer_pending) and delivered but not yet acked
// (chapar_consumer_ack_pending), read from JetStream at scrape time.
// consumers maps each durable consumer to its streams (a sink's events
// consumer is on every partition's stream). Each series carries the sink
// the consumer feeds, so a sink's backlog is one sum by sink over its
// events and retries consumers, and partitions multiply the series by at
// most config.MaxPartitions.
//
// It also reports the age of each consumer's oldest message not yet acked
// (chapar_consumer_oldest_pending_seconds) and each stream's limits
// (chapar_stream_max_age_seconds, chapar_stream_bytes,
// chapar_stream_max_bytes): the events streams keep events for max_age
// (limits retention), so a sink whose oldest pending event nears max_age
// is about to lose it, and a stream that reaches max_bytes refuses
// producers (discard new). Both are alerts (deploy/prometheus).
func (m *Metrics) WatchConsumers(js jetstream.JetStream, consumers map[string][]string) {
	labels := []string{"sink", "stream", "consumer"}
	m.reg.MustRegister(&consumerCollector{js: js, consumers: maps.Clone(consumers),
		pending:    prometheus.NewDesc("chapar_consumer_pending", "Messages waiting in a durable consumer (not yet delivered).", labels, nil),
		ackPending: prometheus.NewDesc("chapar_consumer_ack_pending", "Messages a durable consumer delivered and is waiting to be acked for.", labels, nil),
		oldest: prometheus.NewDesc("chapar_consumer_oldest_pending_seconds",
			"Age of the oldest message a durable consumer has not yet acked (pending or in flight); 0 when it has none.", labels, nil),
		maxAge: prometheus.NewDesc("chapar_stream_max_age_seconds",
			"A stream's max_age: how long it keeps a message, delivered or not (0: no limit).", []string{"stream"}, nil),
		bytes: prometheus.NewDesc("chapar_stream_bytes", "Bytes a stream holds.", []string{"stream"}, nil),
		maxBytes: prometheus.NewDesc("chapar_stream_max_bytes",
			"A stream's max_bytes, past which it refuses new messages (discard new); 0: unlimited.", []string{"stream"}, nil),
	})
}

// consumerSink is the sink a durable consumer feeds, from topology's
// consumer names (sink-<name>, retry-<name>), or "other" for any other
// consumer.
func consumerSink(consumer string) string {
	for _, prefix := range []string{topology.SinkConsumer(""), topology.RetryConsumer("")} {
		if name, ok := strings.CutPrefix(consumer, prefix); ok && envelope.IsSinkName(name) {
			return name
		}
	}
	return other
}

type consumerCollector struct {
	js                          jetstream.JetStream
	consumers                   map[string][]string // consumer → streams
	pending, ackPending, oldest *prometheus.Desc
	maxAge, bytes, maxBytes     *prometheus.Desc
}

func (c *consumerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.ackPending, c.oldest, c.maxAge, c.bytes, c.maxBytes} {
		ch <- d
	}
}

// Collect reads, per scrape, each stream's info once, each consumer's
// info, and for a consumer with messages not yet acked the first of them
// (a direct get past its ack floor): one request more per backlogged
// consumer.
func (c *consumerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	streams := map[string]jetstream.Stream{} // this scrape's, nil if the lookup failed
	stream := func(name string) jetstream.Stream {
		if st, ok := streams[name]; ok {
			return st
		}
		st, err := c.js.Stream(ctx, name)
		if err != nil {
			st = nil
		}
		streams[name] = st
		return st
	}
	for consumer, names := range c.consumers {
		sink := consumerSink(consumer)
		for _, name := range names {
			// Looking the consumer up fetches its info: one request, not two.
			cons, err := c.js.Consumer(ctx, name, consumer)
			if err != nil {
				continue
			}
			info := cons.CachedInfo()
			gauge := func(desc *prometheus.Desc, v float64) {
				if m, err := prometheus.NewConstMetric(desc, prometheus.GaugeValue, v, sink, name, consumer); err == nil {
					ch <- m
				}
			}
			gauge(c.pending, float64(info.NumPending))
			gauge(c.ackPending, float64(info.NumAckPending))
			if age, ok := topology.OldestPending(ctx, stream(name), info, time.Now()); ok {
				gauge(c.oldest, age.Seconds())
			}
		}
	}
	for name, st := range streams {
		if st == nil {
			continue
		}
		info := st.CachedInfo()
		gauge := func(desc *prometheus.Desc, v float64) {
			if m, err := prometheus.NewConstMetric(desc, prometheus.GaugeValue, v, name); err == nil {
				ch <- m
			}
		}
		gauge(c.maxAge, info.Config.MaxAge.Seconds())
		gauge(c.bytes, float64(info.State.Bytes))
		gauge(c.maxBytes, float64(max(0, info.Config.MaxBytes)))
	}
}

// Admin serves /metrics, /healthz (the process is up) and /readyz (NATS
// connected and every consumer bound).
func (m *Metrics) Admin(nc *nats.Conn, ready *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	m.probes(mux, nc, ready)
	return mux
}

// Probes serves /healthz and /readyz alone, as Admin does, for a listener
// of their own (admin.probe_listen).
func (m *Metrics) Probes(nc *nats.Conn, ready *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	m.probes(mux, nc, ready)
	return mux
}

func (m *Metrics) probes(mux *http.ServeMux, nc *nats.Conn, ready *atomic.Bool) {
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case !nc.IsConnected():
			http.Error(w, "not connected to NATS", http.StatusServiceUnavailable)
		case !ready.Load():
			http.Error(w, "consumers not bound yet", http.StatusServiceUnavailable)
		case len(m.lostSinks()) > 0:
			http.Error(w, "consumers lost, being recreated, for sinks: "+strings.Join(m.lostSinks(), ", "), http.StatusServiceUnavailable)
		default:
			// Ready, not 503, with a sink fenced off or paused: a replica
			// fenced off by a newer config is healthy and standing by, and
			// a rolling deploy must not stall on it (docs/design.md,
			// "Config fencing"); a sink paused by an operator is no fault.
			// Both are named.
			msg := "ready"
			if f := m.fencedSinks(); len(f) > 0 {
				msg += "; not consuming, another replica's config owns them: " + strings.Join(f, ", ")
			}
			if p := m.pausedSinks(); len(p) > 0 {
				msg += "; paused by an operator (dispatcher sinks resume NAME): " + strings.Join(p, ", ")
			}
			_, _ = w.Write([]byte(msg + "\n"))
		}
	})
}
