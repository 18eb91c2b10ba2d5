package dispatch

import (
	"sort"
	"sync"
	"time"

	"github.com/chapar-dev/chapar/internal/retry"
)

// Observer is told what the dispatcher does, for metrics and summaries.
// Implementations must be safe for concurrent use.
type Observer interface {
	Received()
	Unrouted(eventType, name string)
	// FilterFailed counts an event a route's filter could not be
	// evaluated on (route is its key, routes[i]): the route did not
	// match it.
	FilterFailed(route string)
	Delivered(sink string, publishToAck time.Duration)
	Retried(sink string, status int)
	DeadLettered(sink, reason string, status int, code string)
	BreakerChanged(sink string, to retry.State)
	// VendorRequest is one request to a vendor: how long it took and how
	// it ended (nil: 2xx).
	VendorRequest(sink string, took time.Duration, err error)
	// InFlight moves the count of deliveries in progress by delta.
	InFlight(sink string, delta int)
	// Unsettled moves the count of events whose fate is decided but not
	// yet stored (a dead-letter or retries stream that cannot be written)
	// by delta.
	Unsettled(sink string, delta int)
	// Panicked counts a panic recovered while handling a message.
	Panicked(stage string)
	// RateLimit reports a sink's current pace (requests a second), set
	// at start and moved by throttling (see pacer).
	RateLimit(sink string, perSecond float64)
	// SinkFenced says whether another replica's config owns a sink, so
	// this one does not consume it (fence.go).
	SinkFenced(sink string, fenced bool)
	// SinkPaused says whether an operator paused a sink (operator.go).
	SinkPaused(sink string, paused bool)
	// ConsumerLost says one of a sink's durable consumers was found gone
	// (it is being recreated); ConsumerBack that it exists again. The
	// sink is not ready in between.
	ConsumerLost(sink string)
	ConsumerBack(sink string)
}

// Tally is an Observer that counts, for the demo summary and tests.
type Tally struct {
	mu           sync.Mutex
	received     int
	unrouted     int
	filterFailed map[string]int // route → events its filter failed on
	delivered    map[string]int
	retried      map[string]int
	deadLettered map[string]map[string]int // sink → reason → count
	breakers     map[string]retry.State
	fenced       map[string]bool
	paused       map[string]bool
	panics       int
	lost         map[string]int // sink → consumers found gone
	down         map[string]int // sink → of those, not yet back
}

// NewTally returns an empty tally.
func NewTally() *Tally {
	return &Tally{
		delivered:    map[string]int{},
		filterFailed: map[string]int{},
		retried:      map[string]int{},
		deadLettered: map[string]map[string]int{},
		breakers:     map[string]retry.State{},
		fenced:       map[string]bool{},
		paused:       map[string]bool{},
		lost:         map[string]int{},
		down:         map[string]int{},
	}
}

func (t *Tally) Received() { t.mu.Lock(); t.received++; t.mu.Unlock() }

func (t *Tally) Unrouted(string, string) { t.mu.Lock(); t.unrouted++; t.mu.Unlock() }

func (t *Tally) FilterFailed(route string) { t.mu.Lock(); t.filterFailed[route]++; t.mu.Unlock() }

// FilterFailures is how many events route's filter failed on.
func (t *Tally) FilterFailures(route string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.filterFailed[route]
}

func (t *Tally) Delivered(sink string, _ time.Duration) {
	t.mu.Lock()
	t.delivered[sink]++
	t.mu.Unlock()
}

func (t *Tally) Retried(sink string, _ int) { t.mu.Lock(); t.retried[sink]++; t.mu.Unlock() }

func (t *Tally) DeadLettered(sink, reason string, _ int, _ string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.deadLettered[sink] == nil {
		t.deadLettered[sink] = map[string]int{}
	}
	t.deadLettered[sink][reason]++
}

func (t *Tally) BreakerChanged(sink string, to retry.State) {
	t.mu.Lock()
	t.breakers[sink] = to
	t.mu.Unlock()
}

func (t *Tally) VendorRequest(string, time.Duration, error) {}

func (t *Tally) InFlight(string, int) {}

func (t *Tally) Unsettled(string, int) {}

func (t *Tally) RateLimit(string, float64) {}

func (t *Tally) SinkFenced(sink string, fenced bool) {
	t.mu.Lock()
	t.fenced[sink] = fenced
	t.mu.Unlock()
}

// Fenced reports whether a sink is fenced off this replica now.
func (t *Tally) Fenced(sink string) bool { t.mu.Lock(); defer t.mu.Unlock(); return t.fenced[sink] }

func (t *Tally) SinkPaused(sink string, paused bool) {
	t.mu.Lock()
	t.paused[sink] = paused
	t.mu.Unlock()
}

// Paused reports whether this replica has a sink paused by an operator now.
func (t *Tally) Paused(sink string) bool { t.mu.Lock(); defer t.mu.Unlock(); return t.paused[sink] }

func (t *Tally) ConsumerLost(sink string) {
	t.mu.Lock()
	t.lost[sink]++
	t.down[sink]++
	t.mu.Unlock()
}

func (t *Tally) ConsumerBack(sink string) { t.mu.Lock(); t.down[sink]--; t.mu.Unlock() }

// ConsumersLost returns how many of a sink's consumers were found gone,
// and how many of those are not back yet.
func (t *Tally) ConsumersLost(sink string) (lost, down int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lost[sink], t.down[sink]
}

func (t *Tally) Panicked(string) { t.mu.Lock(); t.panics++; t.mu.Unlock() }

// Panics returns how many panics were recovered.
func (t *Tally) Panics() int { t.mu.Lock(); defer t.mu.Unlock(); return t.panics }

// SinkCounts is one sink's line of a summary.
type SinkCounts struct {
	Sink         string
	Delivered    int
	Retried      int
	DeadLettered map[string]int
}

// Snapshot returns the counts so far: events received and unrouted, and a
// line per sink that did anything, sorted by name.
func (t *Tally) Snapshot() (received, unrouted int, sinks []SinkCounts) {
	t.mu.Lock()
	defer t.mu.Unlock()
	names := map[string]bool{}
	for s := range t.delivered {
		names[s] = true
	}
	for s := range t.retried {
		names[s] = true
	}
	for s := range t.deadLettered {
		names[s] = true
	}
	for s := range names {
		dl := map[string]int{}
		for r, n := range t.deadLettered[s] {
			dl[r] = n
		}
		sinks = append(sinks, SinkCounts{Sink: s, Delivered: t.delivered[s], Retried: t.retried[s], DeadLettered: dl})
	}
	sort.Slice(sinks, func(i, j int) bool { return sinks[i].Sink < sinks[j].Sink })
	return t.received, t.unrouted, sinks
}

// DeliveredTo returns how many deliveries a sink has acked.
func (t *Tally) DeliveredTo(sink string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.delivered[sink]
}

// BreakerState returns a sink's breaker state as last reported (closed
// until it changes).
func (t *Tally) BreakerState(sink string) retry.State {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.breakers[sink]
}
