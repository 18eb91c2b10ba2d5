package heapfloor

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"

	"go.uber.org/zap"
)

const mib = 1 << 20

func TestPercent(t *testing.T) {
	for _, tc := range []struct {
		name              string
		live, scan, floor uint64
		want              int
	}{
		{"no floor", 1 * mib, 0, 0, 100},
		{"a floor at Go's own minimum", 1 * mib, 0, 4 * mib, 100},
		{"a tiny live heap: the minimum heap bounds it", 1 * mib, 0, 16 * mib, 400},
		{"nothing live yet", 0, 0, 16 * mib, 400},
		{"the live heap bounds it", 6 * mib, 0, 16 * mib, 166},
		{"stacks to scan count with it", 3 * mib, 2 * mib, 20 * mib, 340},
		{"at half the floor: Go's own", 8 * mib, 0, 16 * mib, 100},
		{"past the floor: Go's own", 40 * mib, 0, 16 * mib, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Percent(tc.live, tc.scan, tc.floor); got != tc.want {
				t.Errorf("Percent(%d, %d, %d MiB) = %d, want %d", tc.live/mib, tc.scan/mib, tc.floor/mib, got, tc.want)
			}
		})
	}
}

func TestFloor(t *testing.T) {
	for _, tc := range []struct {
		name                string
		budget, total, heap uint64
		want                uint64
	}{
		{"little beside the heap", 20 * mib, 14 * mib, 6 * mib, 12 * mib},
		{"many stacks beside it", 20 * mib, 30 * mib, 12 * mib, 2 * mib},
		{"the budget spent beside it", 20 * mib, 40 * mib, 10 * mib, 0},
		{"a heap count above the total (read apart)", 20 * mib, 6 * mib, 8 * mib, 20 * mib},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Floor(tc.budget, tc.total, tc.heap); got != tc.want {
				t.Errorf("Floor(%d, %d, %d MiB) = %.1f MiB, want %.1f", tc.budget/mib, tc.total/mib, tc.heap/mib, float64(got)/mib, float64(tc.want)/mib)
			}
		})
	}
}

func TestLimit(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		budget, need, nonHeap uint64
		want                  uint64
	}{
		{"a small live heap: the budget", 24 * mib, 5 * mib, 8 * mib, 24 * mib},
		{"a live heap GOGC 100 needs more for", 24 * mib, 20 * mib, 8 * mib, 35 * mib},
		{"empty slots of a fragmented heap count", 24 * mib, 12 * mib, 36 * mib, 60 * mib},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Limit(tc.budget, tc.need, tc.nonHeap); got != tc.want {
				t.Errorf("Limit(%d, %d, %d MiB) = %.1f MiB, want %.1f", tc.budget/mib, tc.need/mib, tc.nonHeap/mib, float64(got)/mib, float64(tc.want)/mib)
			}
		})
	}
}

type reading struct{ gogc, goal, beside uint64 }

// read returns the runtime's GOGC, its heap goal and what it holds beside
// the heap now.
func read() reading {
	s := []metrics.Sample{
		{Name: "/gc/gogc:percent"}, {Name: "/gc/heap/goal:bytes"}, {Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"}, {Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"},
	}
	metrics.Read(s)
	var heap uint64
	for _, x := range s[3:] {
		heap += x.Value.Uint64()
	}
	return reading{gogc: s[0].Value.Uint64(), goal: s[1].Value.Uint64(), beside: s[2].Value.Uint64() - heap}
}

// What a user depends on: while Run paces the collector, a small heap is
// let grow to about what the budget leaves beside the runtime's other
// memory before a collection; when Run returns, the GOGC it found is back.
func TestRunLetsASmallHeapGrowWithinTheBudgetAndGivesBackGOGC(t *testing.T) {
	before := debug.SetGCPercent(150) // a GOGC of the operator's
	defer debug.SetGCPercent(before)
	beforeLimit := debug.SetMemoryLimit(1 << 40) // and a limit
	defer debug.SetMemoryLimit(beforeLimit)
	runtime.GC()
	const floor = 24 * mib
	budget := read().beside + floor
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Run(ctx, budget, zap.NewNop()); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC() // the goal is set from what the last collection left
		r := read()
		if r.gogc > 150 && r.goal >= floor*8/10 && r.goal+r.beside <= budget*11/10 {
			t.Logf("GOGC %d, heap goal %.1f MiB, %.1f MiB beside it", r.gogc, float64(r.goal)/mib, float64(r.beside)/mib)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC %d, heap goal %.1f MiB, %.1f MiB beside it: want the goal near the %.1f MiB budget less that",
				r.gogc, float64(r.goal)/mib, float64(r.beside)/mib, float64(budget)/mib)
		}
		time.Sleep(10 * time.Millisecond) // a poll: Run sets it after a collection, on its own goroutine
	}
	cancel()
	<-done
	if r := read(); r.gogc != 150 {
		t.Errorf("GOGC %d after Run returned, want the 150 it found", r.gogc)
	}
	if l := debug.SetMemoryLimit(-1); l != 1<<40 {
		t.Errorf("memory limit %d after Run returned, want the %d it found", l, int64(1<<40))
	}
}

func TestRunWithoutABudgetLeavesGOGCAlone(t *testing.T) {
	before := debug.SetGCPercent(150)
	defer debug.SetGCPercent(before)
	Run(context.Background(), 0, zap.NewNop()) // returns at once
	if r := read(); r.gogc != 150 {
		t.Errorf("GOGC %d, want 150 untouched", r.gogc)
	}
}

// A live heap larger than the budget allows is paced as Go would pace it
// (GOGC 100, the goal twice the live heap), not collected back to back by
// the limit that backs the floor.
func TestRunPacesALargeLiveHeapAsGoWould(t *testing.T) {
	before := debug.SetGCPercent(100)
	defer debug.SetGCPercent(before)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Run(ctx, 16*mib, zap.NewNop()); close(done) }()
	defer func() { cancel(); <-done }()
	live := make([][]byte, 48) // 48 MiB kept live, three times the budget
	for i := range live {
		live[i] = make([]byte, mib)
		live[i][0] = 1
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		r := read()
		if r.gogc == 100 && r.goal >= 90*mib {
			t.Logf("GOGC %d, heap goal %.1f MiB with 48 MiB live", r.gogc, float64(r.goal)/mib)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("GOGC %d, heap goal %.1f MiB with 48 MiB live: want GOGC 100's goal, about 96 MiB", r.gogc, float64(r.goal)/mib)
		}
		time.Sleep(10 * time.Millisecond) // a poll: Run sets it after a collection, on its own goroutine
	}
	runtime.KeepAlive(live)
}
