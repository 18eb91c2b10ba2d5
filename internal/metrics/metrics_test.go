package metrics_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/metrics"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// Metrics is what the dispatcher reports to.
var _ dispatch.Observer = (*metrics.Metrics)(nil)

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdminEndpoints(t *testing.T) {
	e := testenv.New(t)
	m := metrics.New("chabok", "metrix", "kenar")
	if _, err := e.Topo.EnsureSink(context.Background(), e.JS, "chabok", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 10}); err != nil {
		t.Fatal(err)
	}
	m.WatchConsumers(e.JS, map[string][]string{topology.SinkConsumer("chabok"): e.Topo.EventsStreams()})
	var ready atomic.Bool
	srv := httptest.NewServer(m.Admin(e.NC, &ready))
	defer srv.Close()

	if code, _ := get(t, srv.URL+"/healthz"); code != 200 {
		t.Errorf("healthz %d", code)
	}
	if code, body := get(t, srv.URL+"/readyz"); code != 503 || !strings.Contains(body, "not bound") {
		t.Errorf("readyz before ready: %d %s", code, body)
	}
	ready.Store(true)
	if code, _ := get(t, srv.URL+"/readyz"); code != 200 {
		t.Errorf("readyz when ready: %d", code)
	}
	// A lost consumer makes the process not ready until it is back.
	m.ConsumerLost("chabok")
	if code, body := get(t, srv.URL+"/readyz"); code != 503 || !strings.Contains(body, "chabok") {
		t.Errorf("readyz with a consumer lost: %d %s", code, body)
	}
	m.ConsumerBack("chabok")
	if code, body := get(t, srv.URL+"/readyz"); code != 200 {
		t.Errorf("readyz with the consumer back: %d %s", code, body)
	}
	// A sink fenced off by another replica's config is said, but the
	// process stays ready: it is standing by, and a rollout must not stall.
	m.SinkFenced("chabok", true)
	if code, body := get(t, srv.URL+"/readyz"); code != 200 || !strings.Contains(body, "chabok") {
		t.Errorf("readyz with a sink fenced off: %d %s", code, body)
	}
	m.SinkFenced("chabok", false)
	if code, body := get(t, srv.URL+"/readyz"); code != 200 || strings.Contains(body, "chabok") {
		t.Errorf("readyz with the sink owned again: %d %s", code, body)
	}
	// A sink an operator paused is no fault: ready, and named (issue 21).
	m.SinkPaused("chabok", true)
	if code, body := get(t, srv.URL+"/readyz"); code != 200 || !strings.Contains(body, "paused") || !strings.Contains(body, "chabok") {
		t.Errorf("readyz with a sink paused: %d %s", code, body)
	}
	if _, body := get(t, srv.URL+"/metrics"); !strings.Contains(body, `chapar_sink_paused{sink="chabok"} 1`) {
		t.Errorf("/metrics with a sink paused has no chapar_sink_paused 1:\n%s", body)
	}
	m.SinkPaused("chabok", false)
	if code, body := get(t, srv.URL+"/readyz"); code != 200 || strings.Contains(body, "chabok") {
		t.Errorf("readyz with the sink resumed: %d %s", code, body)
	}

	e.Publish(testenv.Track(t, "order_paid", "u1"))
	m.Received()
	m.Delivered("chabok", 30*time.Millisecond)
	m.DeadLettered("metrix", "vendor_rejected", 404, "EVENT_TYPE_DOES_NOT_EXIST")
	m.Retried("kenar", 429)
	m.BreakerChanged("kenar", retry.State(2))
	m.VendorRequest("kenar", time.Millisecond, &sinks.Error{Transient: true})
	m.VendorRequest("chabok", time.Millisecond, nil)
	m.VendorRequest("chabok", time.Millisecond, errors.New("dial"))
	m.InFlight("chabok", 2)
	m.Unsettled("chabok", 3)
	m.Unsettled("chabok", -1)
	m.Dropped("unrouted")
	m.Panicked("router")
	// A consumer counts a published event as pending a moment after the
	// publish is acknowledged.
	var body string
	testenv.Eventually(t, 5*time.Second, "the event pending", func() bool {
		_, body = get(t, srv.URL+"/metrics")
		return strings.Contains(body, `chapar_consumer_pending{consumer="sink-chabok",sink="chabok",stream="CHAPAR_EVENTS"} 1`)
	})
	for _, want := range []string{
		`chapar_events_received_total 1`,
		`chapar_deliveries_total{sink="chabok"} 1`,
		`chapar_dead_letters_total{code="EVENT_TYPE_DOES_NOT_EXIST",reason="vendor_rejected",sink="metrix",status="404"} 1`,
		`chapar_retries_scheduled_total{sink="kenar",status="429"} 1`,
		`chapar_breaker_state{sink="kenar"} 2`,
		`chapar_delivery_latency_seconds_count{sink="chabok"} 1`,
		`chapar_vendor_request_seconds_count{outcome="transient",sink="kenar"} 1`,
		`chapar_vendor_request_seconds_count{outcome="error",sink="chabok"} 1`,
		`chapar_consumer_pending{consumer="sink-chabok",sink="chabok",stream="CHAPAR_EVENTS"} 1`,
		`chapar_consumer_ack_pending{consumer="sink-chabok",sink="chabok",stream="CHAPAR_EVENTS"} 0`,
		`chapar_in_flight{sink="chabok"} 2`,
		`chapar_unsettled{sink="chabok"} 2`,
		`chapar_dropped_total{reason="unrouted"} 1`,
		`chapar_panics_total{stage="router"} 1`,
		`process_resident_memory_bytes`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	e.NC.Close()
	if code, body := get(t, srv.URL+"/readyz"); code != 503 || !strings.Contains(body, "NATS") {
		t.Errorf("readyz without NATS: %d %s", code, body)
	}
}

// The vendor-request histogram times requests: a delivery refused before
// any request (an unmapped event) is not one, whatever the sink returns.
func TestVendorRequestCountsOnlyRequests(t *testing.T) {
	cases := []struct {
		name    string
		err     error
		outcome string // "" when no request was made
	}{
		{"2xx", nil, "ok"},
		{"retryable status", &sinks.Error{Transient: true, Status: 503}, "transient"},
		{"network failure", &sinks.Error{Transient: true}, "transient"},
		{"rejected by the vendor", &sinks.Error{Status: 400}, "permanent"},
		{"cut short", context.Canceled, "error"},
		{"rejected before any request", &sinks.Error{Reason: sinks.ReasonUnmappedEvent}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := metrics.New("chabok")
			m.VendorRequest("chabok", time.Millisecond, c.err)
			srv := httptest.NewServer(m.Admin(nil, new(atomic.Bool)))
			defer srv.Close()
			_, body := get(t, srv.URL+"/metrics")
			counted := grep(body, "chapar_vendor_request_seconds_count")
			want := ""
			if c.outcome != "" {
				want = `chapar_vendor_request_seconds_count{outcome="` + c.outcome + `",sink="chabok"} 1`
			}
			if counted != want {
				t.Errorf("counted %q, want %q", counted, want)
			}
		})
	}
}
