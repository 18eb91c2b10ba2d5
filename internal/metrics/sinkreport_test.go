package metrics_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/metrics"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// The sinks page's backlog is read from the sink's consumers in JetStream;
// a sink whose consumers cannot be read says why instead of showing zeros.
func TestSinkReportReadsTheBacklog(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.Topo.EnsureSink(ctx, e.JS, "chabok", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 10}); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"u1", "u2", "u3"} {
		e.Publish(testenv.Track(t, "order_paid", u))
	}
	m := metrics.New()
	m.Delivered("chabok", time.Millisecond)
	report := m.SinkReport(e.JS, e.Topo, []metrics.SinkConfig{{Name: "kenar", Vendor: "kenar"}, {Name: "chabok", Vendor: "chabok"}})
	got, err := report.Sinks(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Name != "chabok" || got[1].Name != "kenar" {
		t.Fatalf("sinks not sorted by name: %+v", got)
	}
	c, k := got[0], got[1]
	if c.Vendor != "chabok" || c.Pending != 3 || c.RetryPending != 0 || c.AckPending != 0 || c.BacklogError != "" || c.Delivered != 1 {
		t.Errorf("chabok: %+v", c)
	}
	if k.BacklogError == "" || !strings.Contains(k.BacklogError, "sink-kenar") || k.Breaker != "closed" {
		t.Errorf("kenar (no consumers): %+v", k)
	}
}
