package metrics_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/metrics"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// The sinks page's backlog is read from the sink's consumers in JetStream,
// summed over every partition's events stream; a sink whose consumers
// cannot be read says why instead of showing zeros.
func TestSinkReportReadsTheBacklog(t *testing.T) {
	for _, partitions := range []int{1, 3} {
		t.Run(fmt.Sprintf("%d partitions", partitions), func(t *testing.T) {
			e := testenv.NewPartitioned(t, partitions)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := e.Topo.EnsureSink(ctx, e.JS, "chabok", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 10}); err != nil {
				t.Fatal(err)
			}
			const n = 9 // users 0..8: over three partitions, each gets some
			for u := range n {
				user := fmt.Sprintf("user-%d", u)
				e.Publish(testenv.Track(t, "order_paid", user, envelope.WithSubject(user)))
			}
			m := metrics.New("kenar", "chabok")
			m.Delivered("chabok", time.Millisecond)
			report := m.SinkReport(e.JS, e.Topo, []metrics.SinkConfig{{Name: "kenar", Vendor: "kenar"}, {Name: "chabok", Vendor: "chabok"}})
			// A consumer counts a published event as pending a moment
			// after the publish is acknowledged.
			var got []metrics.SinkStatus
			testenv.Eventually(t, 5*time.Second, "every event pending", func() bool {
				var err error
				got, err = report.Sinks(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return len(got) == 2 && got[0].Pending == n
			})
			if len(got) != 2 || got[0].Name != "chabok" || got[1].Name != "kenar" {
				t.Fatalf("sinks not sorted by name: %+v", got)
			}
			c, k := got[0], got[1]
			if c.Vendor != "chabok" || c.Pending != n || c.RetryPending != 0 || c.AckPending != 0 || c.BacklogError != "" || c.Delivered != 1 {
				t.Errorf("chabok: %+v", c)
			}
			if k.BacklogError == "" || !strings.Contains(k.BacklogError, "sink-kenar") || k.Breaker != "closed" {
				t.Errorf("kenar (no consumers): %+v", k)
			}
		})
	}
}
