package metrics

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/topology"
)

// The rate window: counts are kept in buckets of statusBucket, over the
// last statusWindow, so a rate says what a sink does now, not since start.
const (
	statusBucket  = 10 * time.Second
	statusWindow  = 5 * time.Minute
	statusBuckets = int(statusWindow / statusBucket)
	// statusMaxSinks bounds the bookkeeping: only the configured sinks are
	// kept (sinkBook.known), and at most this many.
	statusMaxSinks = 1024
	// statusErrorBytes bounds a last error's text.
	statusErrorBytes = 512
)

// SinkStatus is one sink's state as an operator reads it: what this
// process observed (counts since it started, rates over the last Window)
// and the sink's backlog in JetStream, read when asked.
type SinkStatus struct {
	Name   string
	Vendor string
	// Breaker is closed, half-open or open.
	Breaker string
	// Counts since this process started.
	Delivered, Retried, DeadLettered uint64
	// Rates per second over Window (or since start, if shorter).
	DeliveredRate, RetriedRate, DeadLetteredRate float64
	Window                                       time.Duration
	// Pending events not yet delivered to the sink's consumer, due retries
	// and replays not yet taken, and messages taken but not yet acked.
	Pending, RetryPending, AckPending uint64
	// RetryScheduled are the sink's retries waiting for their time in the
	// retries stream, read when asked: with RetryPending, what is waiting
	// to retry now (Retried counts every retry since start).
	RetryScheduled uint64
	// BacklogError says why the backlog could not be read (zero counts
	// then mean unknown).
	BacklogError string
	// LastError is the sink's last failed vendor request, nil if none.
	LastError *SinkError
	// LastDeadLetter is the sink's last dead letter, nil if none.
	LastDeadLetter *SinkError
	// Paused says an operator paused the sink (dispatcher sinks pause):
	// the deployment's record, read when asked, not this process's view;
	// Pause is that record (zero if never paused). PauseError says why it
	// could not be read (Paused false then means unknown).
	Paused     bool
	Pause      topology.OperatorPause
	PauseError string
}

// SinkError is one failure: when, its HTTP status and the vendor's code,
// and (for a request) the error's text, URL-free as internal/sinks makes
// it, clipped.
type SinkError struct {
	At      time.Time
	Reason  string
	Status  int
	Code    string
	Message string
}

// sinkBook keeps, per sink, what SinkStatus reports of the observed
// outcomes. Metrics feeds it from the observer methods it already has, so
// the dispatcher has one observer path. Its zero value is ready for use.
type sinkBook struct {
	mu      sync.Mutex
	now     func() time.Time // nil: time.Now
	started time.Time
	sinks   map[string]*sinkEntry
	// known are the sink names kept (Metrics.sinks): a producer's
	// destination that no sink has must not grow the book.
	known map[string]bool
}

type sinkEntry struct {
	breaker                          retry.State
	delivered, retried, deadLettered uint64
	buckets                          [statusBuckets]statusCount
	lastError, lastDeadLetter        *SinkError
}

// statusCount is one bucket's counts; slot says which bucket of time it
// holds (a stale one is reset when reused).
type statusCount struct {
	slot                             int64
	delivered, retried, deadLettered uint64
}

func (b *sinkBook) clock() time.Time {
	if b.now != nil {
		return b.now()
	}
	return time.Now()
}

// entry returns the sink's entry and the current bucket, with b.mu held;
// nil for a sink name not kept.
func (b *sinkBook) entry(sink string) (*sinkEntry, *statusCount, time.Time) {
	now := b.clock()
	if b.sinks == nil {
		b.sinks = map[string]*sinkEntry{}
		b.started = now
	}
	e := b.sinks[sink]
	if e == nil {
		if !b.known[sink] || len(b.sinks) >= statusMaxSinks {
			return nil, nil, now
		}
		e = &sinkEntry{}
		b.sinks[sink] = e
	}
	slot := now.UnixNano() / int64(statusBucket)
	c := &e.buckets[slot%int64(statusBuckets)]
	if c.slot != slot {
		*c = statusCount{slot: slot}
	}
	return e, c, now
}

func (b *sinkBook) delivered(sink string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, c, _ := b.entry(sink); e != nil {
		e.delivered++
		c.delivered++
	}
}

func (b *sinkBook) retried(sink string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, c, _ := b.entry(sink); e != nil {
		e.retried++
		c.retried++
	}
}

func (b *sinkBook) deadLettered(sink, reason string, status int, code string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, c, now := b.entry(sink); e != nil {
		e.deadLettered++
		c.deadLettered++
		e.lastDeadLetter = &SinkError{At: now, Reason: reason, Status: status, Code: code}
	}
}

func (b *sinkBook) breakerChanged(sink string, to retry.State) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if e, _, _ := b.entry(sink); e != nil {
		e.breaker = to
	}
}

func (b *sinkBook) requestFailed(sink string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	e, _, now := b.entry(sink)
	if e == nil {
		return
	}
	se := &SinkError{At: now, Message: clip(err.Error(), statusErrorBytes)}
	var serr *sinks.Error
	if errors.As(err, &serr) {
		se.Status, se.Code = serr.Status, serr.Code
		if !serr.Transient {
			se.Reason = string(serr.Reason)
		}
	}
	e.lastError = se
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 { // do not cut a UTF-8 sequence
		n--
	}
	return s[:n] + "…"
}

// status fills what the book knows of a sink into s.
func (b *sinkBook) status(s *SinkStatus) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.clock()
	s.Breaker = retry.State(0).String()
	window := statusWindow
	if !b.started.IsZero() && now.Sub(b.started) < window {
		window = max(now.Sub(b.started), statusBucket)
	}
	s.Window = window
	e := b.sinks[s.Name]
	if e == nil {
		return
	}
	s.Breaker = e.breaker.String()
	s.Delivered, s.Retried, s.DeadLettered = e.delivered, e.retried, e.deadLettered
	cur := now.UnixNano() / int64(statusBucket)
	var d, r, dl uint64
	for _, c := range e.buckets {
		if c.slot > cur-int64(statusBuckets) && c.slot <= cur {
			d, r, dl = d+c.delivered, r+c.retried, dl+c.deadLettered
		}
	}
	secs := window.Seconds()
	s.DeliveredRate, s.RetriedRate, s.DeadLetteredRate = float64(d)/secs, float64(r)/secs, float64(dl)/secs
	if e.lastError != nil {
		le := *e.lastError
		s.LastError = &le
	}
	if e.lastDeadLetter != nil {
		ld := *e.lastDeadLetter
		s.LastDeadLetter = &ld
	}
}

// SinkConfig names a configured sink and its vendor.
type SinkConfig struct {
	Name, Vendor string
}

// SinkReport reports the configured sinks' status (see Metrics.SinkReport).
type SinkReport struct {
	m     *Metrics
	js    jetstream.JetStream
	topo  topology.Topology
	sinks []SinkConfig
}

// SinkReport reports each configured sink: what m observed, and its
// consumers' backlog read from JetStream when asked.
func (m *Metrics) SinkReport(js jetstream.JetStream, topo topology.Topology, configured []SinkConfig) *SinkReport {
	s := append([]SinkConfig(nil), configured...)
	sort.Slice(s, func(i, j int) bool { return s[i].Name < s[j].Name })
	return &SinkReport{m: m, js: js, topo: topo, sinks: s}
}

// Sinks returns every configured sink's status, sorted by name. A backlog
// that cannot be read is reported in the sink's BacklogError, not as an
// error: the rest of the page is still worth showing.
func (r *SinkReport) Sinks(ctx context.Context) ([]SinkStatus, error) {
	out := make([]SinkStatus, 0, len(r.sinks))
	pauses, pauseErr := r.pauses(ctx)
	for _, c := range r.sinks {
		s := SinkStatus{Name: c.Name, Vendor: c.Vendor}
		r.m.status.status(&s)
		if pauseErr != nil {
			s.PauseError = pauseErr.Error()
		}
		s.Pause = pauses[c.Name]
		s.Paused = s.Pause.Paused
		if err := r.backlog(ctx, &s); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("sink status: %w", ctx.Err())
			}
			s.BacklogError = err.Error()
		}
		out = append(out, s)
	}
	return out, nil
}

// pauses reads the deployment's operator pauses, by sink.
func (r *SinkReport) pauses(ctx context.Context) (map[string]topology.OperatorPause, error) {
	// Every wait on the broker has a deadline, whatever the caller's.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return r.topo.OperatorPauses(ctx, r.js)
}

func (r *SinkReport) backlog(ctx context.Context, s *SinkStatus) error {
	// Every wait on the broker has a deadline, whatever the caller's.
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// The sink's events consumer on every partition: its backlog is their sum.
	var pending, ackPending uint64
	for _, stream := range r.topo.EventsStreams() {
		ev, err := r.js.Consumer(ctx, stream, topology.SinkConsumer(s.Name))
		if err != nil {
			return fmt.Errorf("read consumer %s on %s: %w", topology.SinkConsumer(s.Name), stream, err)
		}
		ei := ev.CachedInfo()
		pending, ackPending = pending+ei.NumPending, ackPending+uint64(ei.NumAckPending)
	}
	rt, err := r.js.Consumer(ctx, r.topo.RetriesStream(), topology.RetryConsumer(s.Name))
	if err != nil {
		return fmt.Errorf("read consumer %s: %w", topology.RetryConsumer(s.Name), err)
	}
	ri := rt.CachedInfo()
	s.Pending, s.RetryPending = pending, ri.NumPending
	s.AckPending = ackPending + uint64(ri.NumAckPending)
	// A scheduled retry is a message on a subject of its own (its key)
	// until it is due: count the sink's.
	st, err := r.js.Stream(ctx, r.topo.RetriesStream())
	if err != nil {
		return fmt.Errorf("read stream %s: %w", r.topo.RetriesStream(), err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(r.topo.RetryWaitSubjects(s.Name)))
	if err != nil {
		return fmt.Errorf("count the scheduled retries in %s: %w", r.topo.RetriesStream(), err)
	}
	for _, n := range info.State.Subjects {
		s.RetryScheduled += n
	}
	return nil
}

// RetryingNow is what is waiting to retry now: retries scheduled and
// retries or replays due but not yet taken.
func (s SinkStatus) RetryingNow() uint64 { return s.RetryScheduled + s.RetryPending }
