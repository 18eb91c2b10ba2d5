// Package metricstest scrapes a real /metrics on which every Chapar series
// has been set, for the tests that check names against what the code
// exports: the linter's (internal/metrics) and the dashboard's and alert
// rules' (deploy).
package metricstest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/metrics"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// Sink is the sink every per-sink series is set for.
const Sink = "chabok"

// Scrape starts an embedded JetStream with Sink's consumers, calls every
// Metrics method at least once (every outcome of a vendor request), and
// returns the body of a GET /metrics on the admin handler.
func Scrape(t testing.TB) string {
	t.Helper()
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.Topo.EnsureSink(ctx, e.JS, Sink, topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 10}); err != nil {
		t.Fatal(err)
	}
	m := metrics.New(Sink)
	m.SetBuildInfo("v1.2.3", "go1.26.0")
	m.WatchConsumers(e.JS, map[string][]string{
		topology.SinkConsumer(Sink):  e.Topo.EventsStreams(),
		topology.RetryConsumer(Sink): {e.Topo.RetriesStream()},
	})
	m.Received()
	m.Unrouted("chapar.track", "order_paid")
	m.FilterFailed("routes[0]")
	m.Delivered(Sink, 30*time.Millisecond)
	m.Retried(Sink, 503)
	m.DeadLettered(Sink, "vendor_rejected", 400, "INVALID_PARAMETERS")
	m.BreakerChanged(Sink, retry.State(2))
	m.InFlight(Sink, 1)
	m.Unsettled(Sink, 1)
	m.RateLimit(Sink, 50)
	m.Dropped("unrouted")
	m.Panicked("worker")
	m.VendorRequest(Sink, time.Millisecond, nil)
	m.VendorRequest(Sink, time.Millisecond, &sinks.Error{Transient: true, Status: 503})
	m.VendorRequest(Sink, time.Millisecond, &sinks.Error{Status: 400})
	m.VendorRequest(Sink, time.Millisecond, errors.New("cut short"))

	srv := httptest.NewServer(m.Admin(e.NC, new(atomic.Bool)))
	defer srv.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
	}
	return string(body)
}

// Labels maps each sample name in an exposition body (a histogram's
// _bucket, _sum and _count, not its family name, as PromQL sees them) to
// the label names its samples carry.
func Labels(body string) map[string]map[string]bool {
	series := map[string]map[string]bool{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.IndexAny(line, "{ ")
		if i <= 0 {
			continue
		}
		name := line[:i]
		if series[name] == nil {
			series[name] = map[string]bool{}
		}
		if line[i] == '{' {
			for _, m := range labelName.FindAllStringSubmatch(line[i:strings.LastIndex(line, "}")], -1) {
				series[name][m[1]] = true
			}
		}
	}
	return series
}

// labelName finds the names in a sample's {name="value",...}; Chapar's
// label values hold no quotes (they are sanitized), so a simple match does.
var labelName = regexp.MustCompile(`[{,]([a-zA-Z_]\w*)="`)
