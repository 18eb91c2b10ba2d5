// Package heapfloor keeps the garbage collector from collecting a small
// heap over and over, within a memory budget. Go starts a collection when
// the heap has grown by GOGC percent of what the last one left live, and
// never below 4 MiB. A dispatcher's live heap under load is 1–4 MiB, so at
// GOGC 100 it collects every few MiB allocated: in a backlog drain the
// collector's own work was an eighth of the process's CPU and allocation
// another sixth, most of what it cost over a lean consumer
// (docs/benchmarks.md, "The collector paced to a memory budget").
//
// Run lets the heap grow, while little is live, until the runtime's
// memory reaches the budget (the floor: the budget less what the runtime
// holds beside the heap, so 256 workers' stacks leave less of it), and is
// Go's own GOGC 100 once the live heap needs more (many sinks, batches of
// thousands). The memory it costs is bounded by the budget, unlike a
// higher GOGC (a fixed floor of 16 MiB took cmd/bench's slow scenario from
// 46 to 63 MiB peak RSS). It never makes the collector run harder than
// GOGC 100: the soft memory limit it sets while load arrives stays above
// what GOGC 100 needs, where a limit under the live heap would have the
// collector run back to back.
package heapfloor

import (
	"context"
	"math"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync/atomic"

	"go.uber.org/zap"
)

// pacer is held by the Run pacing the process. GOGC and the memory limit
// are the process's, not a Run's: a second Run at once (cmd/dispatcher's
// tests run the command in-process) would take the first one's pacing for
// the operator's and give it back last.
var pacer atomic.Bool

// minHeap is the runtime's smallest heap goal at GOGC 100; it scales with
// GOGC (runtime.gcControllerState.commit: heapMinimum).
const minHeap = 4 << 20

// Percent is the GOGC that puts the next collection at floor bytes of heap
// for a live heap of live bytes and scan bytes of stacks and globals to
// scan, and 100 (Go's default) when that is already further: a heap over
// half the floor is collected as Go would. The goal Go computes is the
// larger of live + (live+scan)·GOGC/100 and minHeap·GOGC/100
// (runtime.gcControllerState.commit), so the percent is bounded by both.
func Percent(live, scan, floor uint64) int {
	if floor <= minHeap || live >= floor/2 {
		return 100
	}
	byLive := (floor - live) * 100 / max(live+scan, 1)
	byMinimum := floor * 100 / minHeap
	return int(max(min(byLive, byMinimum), 100))
}

// Floor is the heap goal that keeps the runtime's memory within budget:
// the budget less what it holds beside the heap (goroutine stacks, its own
// metadata, buffers), which grows with workers and connections (256
// workers hold about three times the stacks of 16).
func Floor(budget, total, heap uint64) uint64 {
	beside := total - min(heap, total)
	if beside >= budget {
		return 0
	}
	return budget - beside
}

// Limit is the soft memory limit that backs the floor: the budget, or
// what GOGC 100 would let the runtime hold, with a quarter to spare, when
// that is more. GOGC 100's heap goal (need) is twice the live heap plus
// the stacks and globals it scans; what the runtime counts against a
// limit beside the heap goal (nonHeap) is all it holds but free and
// released pages and the objects themselves: stacks, metadata, and the
// empty slots of the blocks in use (runtime.memoryLimitHeapGoal, whose
// nonHeapMemory is mappedReady − heapFree − heapAlloc; a heap whose few
// survivors are scattered holds many). Left out, a fragmented heap had its
// goal put at the live heap: 20 times GOGC 100's collections
// (TestRunDoesNotPutAFragmentedHeapsGoalAtTheLiveHeap).
//
// Why a limit: the percent for a collection is set from what the one
// before left live, so when load arrives on an idle dispatcher (little
// live, a high percent) the heap may grow to the floor while the live heap
// and the stacks grow under it; 256 workers starting on a backlog peaked
// at 49.5 MiB RSS without the limit, 47.2 with it (46.0 at GOGC 100). Why
// never below Go's own pacing: a limit that left out the stacks GOGC 100
// counts had the collector run more often than it would at 256 workers,
// for a quarter more CPU (cmd/bench, docs/benchmarks.md "The collector
// paced to a memory budget").
func Limit(budget, need, nonHeap uint64) uint64 {
	return max(budget, (nonHeap+need)/4*5)
}

// pacing is what Run reads after each collection.
type pacing struct {
	budget uint64
	sample []metrics.Sample
}

func newPacing(budget uint64) *pacing {
	return &pacing{budget: budget, sample: []metrics.Sample{
		{Name: "/gc/heap/live:bytes"},
		{Name: "/memory/classes/total:bytes"},
		{Name: "/memory/classes/heap/released:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
		{Name: "/gc/scan/stack:bytes"},
		{Name: "/gc/scan/globals:bytes"},
	}}
}

// next reads the runtime and returns the percent and the limit to set;
// ok is false when this runtime does not report what it needs.
func (p *pacing) next() (percent int, limit uint64, ok bool) {
	metrics.Read(p.sample)
	var v [8]uint64
	for i, s := range p.sample {
		if s.Value.Kind() != metrics.KindUint64 {
			return 0, 0, false
		}
		v[i] = s.Value.Uint64()
	}
	live, total, released, free, objects, unused, scan := v[0], v[1], v[2], v[3], v[4], v[5], v[6]+v[7]
	nonHeap := total - min(released+free+objects, total)
	return Percent(live, scan, Floor(p.budget, total, released+free+objects+unused)),
		Limit(p.budget, 2*live+scan, nonHeap), true
}

// Run paces the garbage collector to budget bytes of the runtime's memory
// until ctx ends, then gives back the GOGC and memory limit it found.
// After each collection (not on a clock: a percent read once a second,
// set for a small live heap and applied to a grown one, let 256 workers
// reach 66 MiB) it reads what was left live and what the runtime holds,
// and sets the percent and the limit for the next. A budget of 0 leaves
// the collector alone.
func Run(ctx context.Context, budget uint64, log *zap.Logger) {
	if budget == 0 {
		return
	}
	if !pacer.CompareAndSwap(false, true) {
		log.Info("the garbage collector is paced already in this process: dispatcher.gc_budget_mib applies once")
		return
	}
	defer pacer.Store(false)
	p := newPacing(budget)
	foundPercent := debug.SetGCPercent(100)
	foundLimit := debug.SetMemoryLimit(-1)
	defer func() {
		debug.SetGCPercent(foundPercent)
		debug.SetMemoryLimit(foundLimit)
	}()
	collected := make(chan struct{}, 1)
	var stopped atomic.Bool
	afterEachCollection(collected, &stopped)
	defer stopped.Store(true)
	set := func() (int, uint64) {
		percent, limit, ok := p.next()
		if !ok {
			return 100, 0
		}
		debug.SetGCPercent(percent)
		debug.SetMemoryLimit(int64(min(limit, math.MaxInt64)))
		return percent, limit
	}
	percent, limit := set()
	log.Info("pacing the garbage collector to a memory budget", zap.Uint64("budget_bytes", budget),
		zap.Int("gogc", percent), zap.Uint64("memory_limit_bytes", limit))
	for {
		select {
		case <-ctx.Done():
			return
		case <-collected:
			set()
		}
	}
}

// sentinel is an object made to be collected: its cleanup says a
// collection happened. (Not a tiny pointer-free object: those share a
// block and may never be collected alone.)
type sentinel struct {
	_ [32]byte
	_ *byte
}

// afterEachCollection sends on collected (without blocking) after each
// garbage collection until stopped.
func afterEachCollection(collected chan<- struct{}, stopped *atomic.Bool) {
	runtime.AddCleanup(new(sentinel), func(struct{}) {
		if stopped.Load() {
			return
		}
		select {
		case collected <- struct{}{}:
		default:
		}
		afterEachCollection(collected, stopped)
	}, struct{}{})
}
