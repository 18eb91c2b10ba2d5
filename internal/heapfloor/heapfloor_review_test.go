package heapfloor

import (
	"context"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
)

// node is a small pointerful object: 64-byte size class, not tiny-allocated.
type node struct {
	next *node
	_    [56]byte
}

func values(names ...string) []uint64 {
	s := make([]metrics.Sample, len(names))
	for i, n := range names {
		s[i].Name = n
	}
	metrics.Read(s)
	out := make([]uint64, len(names))
	for i := range s {
		out[i] = s[i].Value.Uint64()
	}
	return out
}

// churn allocates n bytes in 1 KiB pieces and returns the collections it took.
func churn(n int) uint64 {
	before := values("/gc/cycles/total:gc-cycles")[0]
	ring := make([][]byte, 64)
	for i := 0; i < n/1024; i++ {
		ring[i%len(ring)] = make([]byte, 1024)
	}
	runtime.KeepAlive(ring)
	return values("/gc/cycles/total:gc-cycles")[0] - before
}

// A heap whose survivors are scattered (a few messages of a batch kept,
// the rest freed) holds its empty object slots as heap/unused, which the
// runtime's memory-limit goal counts as non-heap memory and Limit does not
// (beside leaves it out). The limit then puts the heap goal at the live
// heap: collections back to back, where GOGC 100 gives the heap room.
func TestRunDoesNotPutAFragmentedHeapsGoalAtTheLiveHeap(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	all := make([]*node, 32*mib/64) // 32 MiB of 64-byte objects
	for i := range all {
		all[i] = new(node)
	}
	kept := make([]*node, 0, len(all)/8)
	for i := 0; i < len(all); i += 8 { // one in eight kept: 4 MiB live, spans 7/8 empty
		kept = append(kept, all[i])
	}
	all = nil
	runtime.GC()
	runtime.GC()
	v := values("/gc/heap/live:bytes", "/gc/heap/goal:bytes", "/memory/classes/heap/unused:bytes")
	t.Logf("GOGC 100: live %.1f MiB, goal %.1f MiB, unused %.1f MiB", float64(v[0])/mib, float64(v[1])/mib, float64(v[2])/mib)
	goGoal := v[1]
	goCycles := churn(256 * mib)

	defer startRun(t, 24*mib)() // set the percent and the limit before it logs
	runtime.GC()
	v = values("/gc/heap/live:bytes", "/gc/heap/goal:bytes", "/memory/classes/heap/unused:bytes", "/gc/gogc:percent", "/gc/gomemlimit:bytes")
	cycles := churn(256 * mib)
	t.Logf("Run (budget 24 MiB): live %.1f MiB, goal %.1f MiB, unused %.1f MiB, GOGC %d, limit %.1f MiB; collections for 256 MiB allocated: %d (GOGC 100: %d)",
		float64(v[0])/mib, float64(v[1])/mib, float64(v[2])/mib, v[3], float64(v[4])/mib, cycles, goCycles)
	if v[1] < goGoal*9/10 {
		t.Errorf("heap goal %.1f MiB under Run, %.1f MiB at GOGC 100 with %.1f MiB live: the limit makes the collector run harder than Go would",
			float64(v[1])/mib, float64(goGoal)/mib, float64(v[0])/mib)
	}
	if cycles > 2*goCycles {
		t.Errorf("%d collections under Run, %d at GOGC 100 for the same allocation", cycles, goCycles)
	}
	runtime.KeepAlive(kept)
}

// grow keeps n bytes of 64-byte objects live and returns them with the
// collections it took.
func grow(n int) ([]*node, uint64) {
	before := values("/gc/cycles/total:gc-cycles")[0]
	kept := make([]*node, n/64)
	for i := range kept {
		kept[i] = new(node)
	}
	return kept, values("/gc/cycles/total:gc-cycles")[0] - before
}

// A live heap that grows fast between collections (a keyed batcher
// filling) outruns the limit set from the last collection's live heap.
func TestRunLetsALiveHeapGrowAsGoWould(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	runtime.GC()
	kept, goCycles := grow(96 * mib)
	kept = nil
	runtime.GC()
	runtime.GC()

	defer startRun(t, 24*mib)() // set the percent and the limit before it logs
	runtime.GC()

	kept, cycles := grow(96 * mib)
	t.Logf("collections while 96 MiB became live: %d under Run (budget 24 MiB), %d at GOGC 100", cycles, goCycles)
	if cycles > 2*goCycles+2 {
		t.Errorf("%d collections under Run, %d at GOGC 100, while the live heap grew", cycles, goCycles)
	}
	runtime.KeepAlive(kept)
}

// startRun starts Run and returns once it has read and set the collector
// (its first log line); stop cancels it and waits for it to return.
func startRun(t *testing.T, budget uint64) (stop func()) {
	t.Helper()
	core, logs := observer.New(zap.InfoLevel)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { Run(ctx, budget, zap.New(core)); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for logs.Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("Run did not start in 10 s")
		}
		time.Sleep(time.Millisecond) // a poll: Run logs on its own goroutine
	}
	return func() { cancel(); <-done }
}

// In one process (cmd/dispatcher's tests run `run` in-process) a Run can
// still be pacing when the next starts. The last to return must leave the
// operator's GOGC and limit, not the first Run's pacing.
func TestOverlappingRunsGiveBackWhatTheProcessHad(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(150))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(math.MaxInt64))
	runtime.GC()
	stopA := startRun(t, 24*mib)
	stopB := startRun(t, 24*mib)
	stopA()
	stopB()
	if r := read(); r.gogc != 150 {
		t.Errorf("GOGC %d after both Runs returned, want the 150 the process had", r.gogc)
	}
	if l := debug.SetMemoryLimit(-1); l != math.MaxInt64 {
		t.Errorf("memory limit %.1f MiB after both Runs returned, want none", float64(l)/mib)
	}
}

// The sentinel chain hears collections, however many, and stops re-arming
// once stopped. A re-arm that lands while a collection marks allocates the
// new sentinel black: that collection is missed and the next one heard, so
// a signal may take two collections, never more than a few.
func TestAfterEachCollectionReArmsAndStops(t *testing.T) {
	collected := make(chan struct{}, 1)
	var stopped atomic.Bool
	afterEachCollection(collected, &stopped)
	for i := range 300 {
		deadline := time.Now().Add(5 * time.Second)
		gcs := 0
	wait:
		for {
			runtime.GC()
			gcs++
			select {
			case <-collected:
				break wait
			case <-time.After(20 * time.Millisecond): // a poll: the cleanup runs on its own goroutine
			}
			if time.Now().After(deadline) {
				t.Fatalf("signal %d: none in 5 s (%d collections): the chain stopped re-arming", i+1, gcs)
			}
		}
		if gcs > 4 {
			t.Errorf("signal %d took %d collections", i+1, gcs)
		}
	}
	stopped.Store(true)
	for range 5 {
		runtime.GC()
	}
	select {
	case <-collected: // at most the one in flight when stopped
	default:
	}
	runtime.GC()
	select {
	case <-collected:
		t.Error("a signal after the chain was stopped")
	case <-time.After(100 * time.Millisecond):
	}
}
