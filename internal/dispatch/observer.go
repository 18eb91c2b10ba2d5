package dispatch

import (
	"sort"
	"sync"
	"time"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/topology"
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
	// InFlight moves the count of vendor requests in progress by delta (a
	// batch is one): from the gate's slot to its release, called with the
	// gate's lock held (gate.sending), so it must not block.
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

// Details is what an Observer may also implement to be told the
// particulars behind two of its calls, for Chapar's operational events
// (internal/opsevents), the way an httptrace.ClientTrace is told more
// than a status. Neither is on the hot path: a dead letter once stored,
// an operator's pause as it is applied. An implementation must not block
// (it is called on a worker, or on the pauses' watch) nor keep what it is
// given past the call.
type Details interface {
	// DeadLetterStored follows DeadLettered with the record: called by
	// the replica whose write stored it, so once per dead letter in the
	// deployment (a duplicate write is not a new dead letter).
	DeadLetterStored(rec *dlq.Record)
	// OperatorPaused follows SinkPaused with the operator's record that
	// changed the sink's state and its revision in the pauses bucket
	// (0: no record, not paused), the same on every replica.
	OperatorPaused(sink string, rec topology.OperatorPause, revision uint64)
}

// detailsOf is o's Details, or one that ignores them.
func detailsOf(o Observer) Details {
	if d, ok := o.(Details); ok {
		return d
	}
	return noDetails{}
}

type noDetails struct{}

func (noDetails) DeadLetterStored(*dlq.Record)                          {}
func (noDetails) OperatorPaused(string, topology.OperatorPause, uint64) {}

// Observers composes observers: every call goes to each, in order, and
// a Details call to each that implements it. It is the one place
// observers are combined (internal/app: the metrics or the demo's tally,
// and the ops events), so the engine keeps talking to one.
func Observers(obs ...Observer) Observer {
	out := make(observers, 0, len(obs))
	for _, o := range obs {
		if o != nil {
			out = append(out, o)
		}
	}
	if len(out) == 1 {
		return out[0]
	}
	return out
}

type observers []Observer

func (os observers) Received() {
	for _, o := range os {
		o.Received()
	}
}

func (os observers) Unrouted(eventType, name string) {
	for _, o := range os {
		o.Unrouted(eventType, name)
	}
}

func (os observers) FilterFailed(route string) {
	for _, o := range os {
		o.FilterFailed(route)
	}
}

func (os observers) Delivered(sink string, publishToAck time.Duration) {
	for _, o := range os {
		o.Delivered(sink, publishToAck)
	}
}

func (os observers) Retried(sink string, status int) {
	for _, o := range os {
		o.Retried(sink, status)
	}
}

func (os observers) DeadLettered(sink, reason string, status int, code string) {
	for _, o := range os {
		o.DeadLettered(sink, reason, status, code)
	}
}

func (os observers) BreakerChanged(sink string, to retry.State) {
	for _, o := range os {
		o.BreakerChanged(sink, to)
	}
}

func (os observers) VendorRequest(sink string, took time.Duration, err error) {
	for _, o := range os {
		o.VendorRequest(sink, took, err)
	}
}

func (os observers) InFlight(sink string, delta int) {
	for _, o := range os {
		o.InFlight(sink, delta)
	}
}

func (os observers) Unsettled(sink string, delta int) {
	for _, o := range os {
		o.Unsettled(sink, delta)
	}
}

func (os observers) Panicked(stage string) {
	for _, o := range os {
		o.Panicked(stage)
	}
}

func (os observers) RateLimit(sink string, perSecond float64) {
	for _, o := range os {
		o.RateLimit(sink, perSecond)
	}
}

func (os observers) SinkFenced(sink string, fenced bool) {
	for _, o := range os {
		o.SinkFenced(sink, fenced)
	}
}

func (os observers) SinkPaused(sink string, paused bool) {
	for _, o := range os {
		o.SinkPaused(sink, paused)
	}
}

func (os observers) ConsumerLost(sink string) {
	for _, o := range os {
		o.ConsumerLost(sink)
	}
}

func (os observers) ConsumerBack(sink string) {
	for _, o := range os {
		o.ConsumerBack(sink)
	}
}

func (os observers) DeadLetterStored(rec *dlq.Record) {
	for _, o := range os {
		detailsOf(o).DeadLetterStored(rec)
	}
}

func (os observers) OperatorPaused(sink string, rec topology.OperatorPause, revision uint64) {
	for _, o := range os {
		detailsOf(o).OperatorPaused(sink, rec, revision)
	}
}

// Tally is an Observer that counts, for the demo summary and tests.
type Tally struct {
	mu           sync.Mutex
	received     int
	unrouted     int
	filterFailed map[string]int // route → events its filter failed on
	delivered    map[string]int
	inFlight     map[string]int // sink → requests under way (InFlight)
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
		inFlight:     map[string]int{},
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

func (t *Tally) InFlight(sink string, delta int) {
	t.mu.Lock()
	t.inFlight[sink] += delta
	t.mu.Unlock()
}

// Sending is how many of a sink's requests are under way now: given a
// slot by the gate, not yet released. A test that pauses a sink waits for
// 0 before it counts anything the vendor receives against the pause: a
// request that passed the gate before the pause may still be on its way
// to the vendor.
func (t *Tally) Sending(sink string) int { t.mu.Lock(); defer t.mu.Unlock(); return t.inFlight[sink] }

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
