package dlq_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// Two operators replay the same dead letters at once (two terminals, or a
// terminal and the console). Each event is queued once (the replay's
// message id), but each replay must report what it did: a record the
// other replay removed first was not replayed by this one. Counted twice,
// the two reports (and their chapar.ops.replay_done events, and the
// console job's followed records) claim nearly twice the replays there
// were.
func TestConcurrentReplaysCountOnlyWhatEachReplayed(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := e.Topo.EnsureSink(ctx, e.JS, "chabok", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 100}); err != nil {
		t.Fatal(err)
	}
	const n = 20
	w := dlq.NewWriter(e.JS, e.Topo)
	for i := range n {
		if _, err := w.Write(ctx, &dlq.Record{Sink: "chabok", Reason: outcome.VendorRejected, Status: 400,
			EventID: fmt.Sprintf("e-%d", i), EventType: "chapar.track", Origin: uint64(i + 1), LastAttempt: time.Now(), Data: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	// Operator A's replay has read its batch; after its first record,
	// operator B's replay of the same dead letters runs to its end.
	a, b := dlq.NewStore(e.JS, e.Topo), dlq.NewStore(e.JS, e.Topo)
	var resB dlq.ReplayResult
	var errB error
	ran := false
	var followedA int
	resA, errA := a.Replay(ctx, dlq.Filter{Sink: "chabok"}, dlq.ReplayOptions{Replayed: func(*dlq.Record) {
		followedA++
		if !ran {
			ran = true
			resB, errB = b.Replay(ctx, dlq.Filter{Sink: "chabok"}, dlq.ReplayOptions{})
		}
	}})
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	retries, err := e.JS.Stream(ctx, e.Topo.RetriesStream())
	if err != nil {
		t.Fatal(err)
	}
	if q := retries.CachedInfo().State.Msgs; q != n {
		t.Errorf("%d replays queued, want %d", q, n)
	}
	if got := resA.Replayed + resB.Replayed; got != n {
		t.Errorf("A reports %d replayed (and followed %d records), B %d: %d in all, but %d dead letters were replayed", resA.Replayed, followedA, resB.Replayed, got, n)
	}
	if left, err := a.List(ctx, dlq.Filter{}, 0); err != nil || len(left) != 0 {
		t.Errorf("%d dead letters left: %v", len(left), err)
	}
}
