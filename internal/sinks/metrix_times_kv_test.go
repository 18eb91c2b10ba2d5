package sinks_test

import (
	"context"
	"sync"
	"testing"

	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// Two processes (two connections, two stores) reserve times for one user
// at once, every message wanting the same millisecond: each gets one of
// its own, the lost races read again, and a message reserved again keeps
// its millisecond.
func TestMetrixTimesAreDistinctAcrossProcesses(t *testing.T) {
	e := testenv.New(t)
	ctx := context.Background()
	const perProcess, workers = 40, 4
	const want = int64(1_795_428_900_000)
	var mu sync.Mutex
	got := map[int64]string{}
	ids := map[string]int64{}
	var wg sync.WaitGroup
	for p := range 2 {
		_, js := e.Connect()
		reserve, err := sinks.ReserveMetrixTime(ctx, js, e.Topo.StreamPrefix())
		if err != nil {
			t.Fatal(err)
		}
		for w := range workers {
			wg.Go(func() {
				for i := range perProcess / workers {
					id := string(rune('a'+p)) + string(rune('a'+w)) + string(rune('a'+i))
					at, err := reserve(ctx, "user", id, want)
					if err != nil {
						t.Error(err)
						return
					}
					again, err := reserve(ctx, "user", id, want)
					if err != nil || again != at {
						t.Errorf("%s reserved again: %d then %d (%v)", id, at, again, err)
					}
					mu.Lock()
					if other, dup := got[at]; dup {
						t.Errorf("%s and %s both at %d", other, id, at)
					}
					got[at], ids[id] = id, at
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	if len(ids) != 2*perProcess {
		t.Fatalf("%d messages reserved, want %d", len(ids), 2*perProcess)
	}
	// They sort by id among themselves (no receipt times here), so a
	// late one may go below the others: within a burst's width either way.
	for at := range got {
		if at <= want-2*perProcess || at >= want+2*perProcess {
			t.Errorf("time %d more than the burst's width from %d", at, want)
		}
	}
}
