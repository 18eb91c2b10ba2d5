package metrics_test

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/chapar-dev/chapar/internal/metrics/metricstest"
)

// Every series, set at least once and scraped from a real /metrics, passes
// the linter promtool check metrics runs: operators' tooling and queries
// rely on its conventions (counters end in _total, base units in names).
func TestMetricsPassPromlint(t *testing.T) {
	body := metricstest.Scrape(t)
	problems, err := promlint.New(strings.NewReader(body)).Lint()
	if err != nil {
		t.Fatalf("lint: %v", err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// The series issue 12 asks for, by the names docs/operations.md, the
// dashboard and the alert rules use.
func TestOperatorSeriesAreExported(t *testing.T) {
	series := metricstest.Labels(metricstest.Scrape(t))
	for _, want := range []string{
		"chapar_consumer_pending",             // backlog per sink ...
		"chapar_consumer_ack_pending",         // ... and what waits for an ack, apart
		"chapar_vendor_request_seconds_count", // requests only
		"chapar_dead_letters_total",           // per sink and reason
		"chapar_breaker_state",
		"chapar_build_info",
		"chapar_retries_scheduled_total",
		"chapar_deliveries_total",
		"chapar_delivery_latency_seconds_bucket",
		"chapar_consumer_oldest_pending_seconds", // a sink's backlog against ...
		"chapar_stream_max_age_seconds",          // ... the events' max_age
		"chapar_stream_bytes",                    // a stream's size against ...
		"chapar_stream_max_bytes",                // ... its max_bytes
		"chapar_ops_events_total",                // operational events published, suppressed, dropped
	} {
		if _, ok := series[want]; !ok {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
