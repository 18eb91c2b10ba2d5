package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// Review (issue 19): a dispatcher whose presence record cannot be written
// (the replicas bucket refusing writes: "delivering all the same") and
// whose breaker is open pulls nothing and has no record: `sinks remove`
// saw nothing of it, deleted its consumers and purged the retries it had
// scheduled (their originals acked): lost. A replica running the sink now
// clears the removal's mark at its next fence check (Topology.Reclaim),
// so the removal gives up.
func TestReviewSinksRemoveGivesUpOnAReplicaWithoutPresenceAndAShutGate(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err := e.Topo.EnsureReplicas(ctx, e.JS)
	if err != nil {
		t.Fatal(err)
	}
	st, err := e.JS.Stream(ctx, "KV_"+e.Topo.ReplicasBucket())
	if err != nil {
		t.Fatal(err)
	}
	scfg := st.CachedInfo().Config
	scfg.Sealed = true
	if _, err := e.JS.UpdateStream(ctx, scfg); err != nil {
		t.Fatal(err)
	}
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Breaker = retry.BreakerSettings{FailureThreshold: 2, OpenTimeout: 10 * time.Second, Interval: time.Minute}
	sink.Retry.InitialInterval = 10 * time.Second
	sink.Retry.MaxInterval = 10 * time.Second
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 503})
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}})
	ids := publishTracks(t, e, 2, "order_paid")
	testenv.Eventually(t, 5*time.Second, "breaker open", func() bool { return vendor.Count(503) >= 2 })
	testenv.Eventually(t, 15*time.Second, "the retries waiting and no pull request on the sink's consumers", func() bool {
		f, err := e.Topo.Footprint(ctx, e.JS, "gateway")
		return err == nil && f.Retries >= 2 && len(f.Consuming()) == 0
	})
	running, err := e.Topo.ReplicasRunning(ctx, e.JS, "gateway")
	if err != nil || len(running) != 0 {
		t.Fatalf("presence records: %v %v; want none (the bucket refuses writes)", running, err)
	}
	_, err = e.Topo.Retire(ctx, e.JS, "gateway", topology.RemovalSettle)
	t.Logf("removal: %v", err)
	vendor.ClearFault()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) && !allDelivered(t, e, ids)() {
		time.Sleep(250 * time.Millisecond)
	}
	got := gatewayIDs(t, e)
	n := 0
	for _, id := range ids {
		n += min(got[id], 1)
	}
	t.Logf("%d of %d events of the running sink delivered after the removal attempt", n, len(ids))
	if err == nil || n != len(ids) {
		t.Errorf("removal of a sink a dispatcher runs (no presence record, gate shut): err %v; %d of %d events delivered", err, n, len(ids))
	}
}
