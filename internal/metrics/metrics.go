// Package metrics exposes what the dispatcher does to Prometheus, and
// serves the admin endpoints: /metrics, /healthz and /readyz.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/sinks"
)

// Metrics implements dispatch.Observer with Prometheus collectors.
type Metrics struct {
	reg          *prometheus.Registry
	received     prometheus.Counter
	unrouted     *prometheus.CounterVec
	delivered    *prometheus.CounterVec
	retried      *prometheus.CounterVec
	deadLettered *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	requests     *prometheus.HistogramVec
	inFlight     *prometheus.GaugeVec
	breaker      *prometheus.GaugeVec
	unsettled    *prometheus.GaugeVec
	panics       *prometheus.CounterVec
}

// New registers Chapar's collectors (and the Go and process ones) in a
// registry of its own.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &Metrics{
		reg: reg,
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "chapar_events_received_total", Help: "Events the router took from the events stream (first deliveries)."}),
		unrouted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chapar_events_unrouted_total", Help: "Valid events no route matched."}, []string{"type"}),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chapar_deliveries_total", Help: "Deliveries the vendor accepted (2xx) and Chapar acked."}, []string{"sink"}),
		retried: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chapar_retries_total", Help: "Transient failures handed back to JetStream for a delayed retry."}, []string{"sink", "status"}),
		deadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chapar_dead_letters_total", Help: "Dead letters written."}, []string{"sink", "reason", "status", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "chapar_delivery_latency_seconds", Help: "From the event's arrival in JetStream to the vendor's 2xx.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 16)}, []string{"sink"}),
		requests: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "chapar_vendor_request_seconds", Help: "One vendor request, by how it ended.",
			Buckets: prometheus.DefBuckets}, []string{"sink", "outcome"}),
		inFlight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "chapar_in_flight", Help: "Vendor requests in progress."}, []string{"sink"}),
		breaker: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "chapar_breaker_state", Help: "Circuit breaker state: 0 closed, 1 half-open, 2 open."}, []string{"sink"}),
		unsettled: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "chapar_unsettled", Help: "Events whose fate is decided but not yet stored (the dead-letter stream cannot be written)."}, []string{"sink"}),
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "chapar_panics_total", Help: "Panics recovered while handling a message (the message is dead-lettered)."}, []string{"stage"}),
	}
	for _, c := range []prometheus.Collector{m.received, m.unrouted, m.delivered, m.retried, m.deadLettered, m.latency, m.requests, m.inFlight, m.breaker, m.unsettled, m.panics} {
		f(c)
	}
	return m
}

func (m *Metrics) Received()                    { m.received.Inc() }
func (m *Metrics) Unrouted(eventType, _ string) { m.unrouted.WithLabelValues(eventType).Inc() }
func (m *Metrics) Delivered(sink string, d time.Duration) {
	m.delivered.WithLabelValues(sink).Inc()
	m.latency.WithLabelValues(sink).Observe(d.Seconds())
}
func (m *Metrics) Retried(sink string, status int) {
	m.retried.WithLabelValues(sink, strconv.Itoa(status)).Inc()
}
func (m *Metrics) DeadLettered(sink, reason string, status int, code string) {
	m.deadLettered.WithLabelValues(sink, reason, strconv.Itoa(status), code).Inc()
}
func (m *Metrics) BreakerChanged(sink string, to retry.State) {
	m.breaker.WithLabelValues(sink).Set(float64(to))
}
func (m *Metrics) InFlight(sink string, delta int) {
	m.inFlight.WithLabelValues(sink).Add(float64(delta))
}
func (m *Metrics) Unsettled(sink string, delta int) {
	m.unsettled.WithLabelValues(sink).Add(float64(delta))
}
func (m *Metrics) Panicked(stage string) { m.panics.WithLabelValues(stage).Inc() }
func (m *Metrics) VendorRequest(sink string, took time.Duration, err error) {
	outcome := "ok"
	var serr *sinks.Error
	switch {
	case err == nil:
	case errors.As(err, &serr) && serr.Transient:
		outcome = "transient"
	case errors.As(err, &serr):
		outcome = "permanent"
	default:
		outcome = "error"
	}
	m.requests.WithLabelValues(sink, outcome).Observe(took.Seconds())
}

// WatchConsumers adds a gauge of each consumer's pending messages, read
// from JetStream at scrape time.
func (m *Metrics) WatchConsumers(js jetstream.JetStream, consumers map[string]string) {
	m.reg.MustRegister(&pendingCollector{js: js, consumers: consumers,
		desc: prometheus.NewDesc("chapar_consumer_pending", "Messages waiting in a durable consumer (not yet delivered).", []string{"stream", "consumer"}, nil)})
}

type pendingCollector struct {
	js        jetstream.JetStream
	consumers map[string]string // consumer → stream
	desc      *prometheus.Desc
}

func (c *pendingCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *pendingCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for consumer, stream := range c.consumers {
		cons, err := c.js.Consumer(ctx, stream, consumer)
		if err != nil {
			continue
		}
		info, err := cons.Info(ctx)
		if err != nil {
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(info.NumPending), stream, consumer)
	}
}

// Admin serves /metrics, /healthz (the process is up) and /readyz (NATS
// connected and every consumer bound).
func (m *Metrics) Admin(nc *nats.Conn, ready *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch {
		case !nc.IsConnected():
			http.Error(w, "not connected to NATS", http.StatusServiceUnavailable)
		case !ready.Load():
			http.Error(w, "consumers not bound yet", http.StatusServiceUnavailable)
		default:
			_, _ = w.Write([]byte("ready\n"))
		}
	})
	return mux
}
