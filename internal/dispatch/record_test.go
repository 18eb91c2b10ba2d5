package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/deliveries"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/jsread"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

func lookup(t *testing.T, e *testenv.Env, id string) map[string]deliveries.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := deliveries.Lookup(ctx, e.NC, e.Topo.DeliveriesStream(), e.Topo.Prefix(), id, jsread.From{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]deliveries.Record{}
	for _, r := range recs {
		out[r.Sink] = r
	}
	return out
}

// "Did event X reach Metrix, and when?": each delivery's state is
// recorded where it is settled, and read back by the event's id.
func TestDeliveriesAreRecordedForLookup(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Retry.InitialInterval, sink.Retry.MaxInterval, sink.Retry.MaxElapsed = time.Hour, time.Hour, 0
	sink.Breaker.FailureThreshold = 1000
	_, m := startMisbehaving(t, e, sink)

	good := testenv.Track(t, "order_paid", "u1", envelope.WithSubject("u1"))
	failing := testenv.Track(t, "order_paid", "u2")
	rejected := testenv.Track(t, "no_such_slug", "u3") // not in slugs: unmapped for the vendor
	m.mu.Lock()
	m.fail[failing.ID] = true
	m.mu.Unlock()
	before := time.Now()
	ack := e.Publish(good)
	e.Publish(failing)
	e.Publish(rejected)

	testenv.Eventually(t, 10*time.Second, "three deliveries recorded", func() bool {
		return len(lookup(t, e, good.ID)) == 1 && len(lookup(t, e, failing.ID)) == 1 && len(lookup(t, e, rejected.ID)) == 1
	})
	g := lookup(t, e, good.ID)["gateway"]
	if g.State != deliveries.Delivered || g.Attempts != 1 || g.Seq != ack.Sequence || g.Stream != ack.Stream ||
		g.At.Before(before) || g.Latency <= 0 || g.Subject != "u1" || g.Name != "order_paid" {
		t.Errorf("delivered event's record: %+v (published as %s #%d)", g, ack.Stream, ack.Sequence)
	}
	f := lookup(t, e, failing.ID)["gateway"]
	if f.State != deliveries.Retrying || f.Attempts != 1 || f.Status != 500 || f.NextAttempt.Before(time.Now().Add(50*time.Minute)) {
		t.Errorf("retrying event's record: %+v", f)
	}
	r := lookup(t, e, rejected.ID)["gateway"]
	if r.State != deliveries.DeadLettered || r.Reason == "" || r.Reason != string(outcome.UnmappedEvent) || r.DeadLetter == 0 {
		t.Errorf("dead-lettered event's record: %+v", r)
	}
	if got := lookup(t, e, "never-published"); len(got) != 0 {
		t.Errorf("an id never published has records: %+v", got)
	}
}
