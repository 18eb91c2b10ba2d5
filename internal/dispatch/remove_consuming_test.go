package dispatch_test

import (
	"context"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// `dispatcher sinks remove --yes` refuses while a dispatcher runs the sink.
// A dispatcher whose breaker is open pulls nothing (consume.go), so no pull
// request waits on the sink's consumers (SinkFootprint.Consuming); it is
// seen by its presence record (presence.go). Before presence records the
// removal went ahead: it deleted the consumers of a sink a running
// dispatcher still had (its healer recreated them) and purged the retries
// it had scheduled, which were lost.
func TestSinksRemoveSeesADispatcherWhoseBreakerIsOpen(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Breaker = retry.BreakerSettings{FailureThreshold: 2, OpenTimeout: 10 * time.Second, Interval: time.Minute}
	sink.Retry.InitialInterval = 10 * time.Second // the retries wait in the stream
	sink.Retry.MaxInterval = 10 * time.Second
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 503})
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}})
	// Two events fail, are scheduled as retries (their originals acked,
	// so the consumer's ack floor passes them) and open the breaker.
	ids := publishTracks(t, e, 2, "order_paid")
	testenv.Eventually(t, 5*time.Second, "breaker open", func() bool { return vendor.Count(503) >= 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The defect's condition: the retries written, and no pull left
	// waiting (the gate is shut).
	testenv.Eventually(t, 15*time.Second, "the retries waiting and no pull request on the sink's consumers", func() bool {
		f, err := e.Topo.Footprint(ctx, e.JS, "gateway")
		return err == nil && f.Retries >= 2 && len(f.Consuming()) == 0
	})
	_, err := e.Topo.Retire(ctx, e.JS, "gateway", topology.RemovalSettle)
	var inUse *topology.InUseError
	if !errors.As(err, &inUse) || len(inUse.Replicas) != 1 || !slices.Contains(inUse.Replicas[0].Sinks, "gateway") ||
		inUse.Replicas[0].PID != os.Getpid() || !strings.Contains(err.Error(), "still consuming sink gateway") {
		t.Errorf("removal of a sink a dispatcher runs with its breaker open: %v, want it refused naming this process", err)
	}
	vendor.ClearFault()
	testenv.Eventually(t, 30*time.Second, "every event of the sink the dispatcher still runs delivered", allDelivered(t, e, ids))
}
