package dispatch

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/topology"
)

// An operator's pause has a reach. The events streams keep an event for
// streams.max_age, acked or not (limits retention), so a sink paused
// longer than that would lose its backlog without a word: the stream
// drops what its consumer never got. Past the reach, nine tenths of
// max_age, the paused sink's oldest events are dead-lettered
// (paused_past_max_age) instead, with no request to the vendor, and
// dispatcher dlq replay puts them back once it is resumed.
//
// While a sink is paused each replica running it checks, every
// rescueEvery, the age of its oldest unacked event on each events consumer
// (topology.OldestPending: the message past the ack floor, as the metrics
// read it). Past the reach that consumer is swept: pulled (fetches, each
// with a deadline), each event past the reach dead-lettered and acked, the
// first younger one and whatever came with it handed back without an
// attempt, and the sweep ends. Nothing is sent to the vendor; the sink
// stays paused. Skips and invalid envelopes met on the way are settled as
// the worker settles them (parseRoute, checkDestinations, the fence).
//
// Why nine tenths: the tenth left is the margin for the check's period, a
// sweep of what crossed the reach since the last one, and a dead-letter
// outage in between (a record that cannot be written is handed back and
// tried at the next check). With the default max_age (a week) that is
// 16.8 hours; the event is kept six days and nearly seven hours paused,
// which no planned pause should reach.
//
// An ordered sink's sweep pulls in its order group (pinning this replica
// for the sweep, unpinned after it). Old events are a prefix of the
// stream, so what is dead-lettered of a key is a prefix of its events, as
// when a lane head is dead-lettered (released_barrier, which releases
// it); the younger ones are handed back plainly, not with a delay, which
// would let a key's later events overtake them after the resumption (as
// on shutdown, order.go).
//
// The retries stream has no max_age (work queue, nothing discarded): a
// paused sink's retries and replays wait there unharmed, so only the
// events consumers are swept.

// reachTenths is the share of max_age, in tenths, a paused sink's events
// are kept before they are dead-lettered.
const reachTenths = 9

// PauseReach is how old a paused sink's event may grow before it is
// dead-lettered; 0 when the stream keeps events for ever (no max_age).
// dispatcher sinks pause says it.
func PauseReach(maxAge time.Duration) time.Duration {
	if maxAge <= 0 {
		return 0
	}
	return maxAge / 10 * reachTenths
}

// rescueEvery is how often a paused sink's oldest events are checked: a
// tenth of the margin between the reach and max_age, so a check comes
// many times before an event past the reach would be dropped, but at
// least every minute and at most every 50 ms.
func rescueEvery(maxAge time.Duration) time.Duration {
	if maxAge <= 0 {
		return time.Minute
	}
	return min(max((maxAge-PauseReach(maxAge))/10, 50*time.Millisecond), time.Minute)
}

// pausedFate is what a paused sink's sweep does with an event that has
// been in the stream for age.
type pausedFate struct {
	// deadLetter: past the reach; dead-lettered paused_past_max_age.
	deadLetter bool
	// handBack is the delay of the hand-back of a younger one: until it
	// reaches the reach, at most rescueEvery, so that after a resumption
	// it waits no longer than that; 0 for an ordered sink (a delay would
	// let later events of its key overtake it).
	handBack time.Duration
}

// decidePaused is the fate of an event of age in a paused sink's sweep.
// It also says whether a consumer is swept at all: its oldest unacked
// event's fate is a dead letter.
func decidePaused(age, maxAge time.Duration, ordered bool) pausedFate {
	reach := PauseReach(maxAge)
	if reach > 0 && age >= reach {
		return pausedFate{deadLetter: true}
	}
	if ordered {
		return pausedFate{}
	}
	wait := rescueEvery(maxAge)
	if reach > 0 {
		wait = min(reach-age, wait)
	}
	return pausedFate{handBack: wait}
}

// Sweeps' sizes and deadlines: a fetch asks for at most rescueBatch and
// ends after rescueFetchWait; every other read ends after
// rescueReadTimeout.
const (
	rescueBatch       = 256
	rescueFetchWait   = time.Second
	rescueReadTimeout = 2 * time.Second
)

// rescuer keeps one sink's paused backlog within its reach, in this
// replica.
type rescuer struct {
	w       *sinkWorker
	b       boundSink
	ordered bool
	maxAge  time.Duration   // the events streams' max_age, as last read
	swept   map[string]bool // consumers' streams being swept, for the log
}

// rescue runs the sink's rescuer until ctx ends. It runs as one of the
// worker's held goroutines (dispatcher.go), so the dead letters it may
// leave held are waited for with them.
func (b boundSink) rescue(ctx context.Context) {
	r := &rescuer{w: b.w, b: b, ordered: b.orderKey != nil, maxAge: b.w.topo.MaxAge(), swept: map[string]bool{}}
	for {
		if r.w.gate.heldByOperator() && !r.w.fence.fenced() {
			for _, c := range b.cons.Events {
				r.check(ctx, c)
			}
		} else {
			clear(r.swept)
		}
		if sleep(ctx, rescueEvery(r.maxAge), nil) != nil {
			return
		}
	}
}

// check sweeps c if its oldest unacked event is past the reach.
func (r *rescuer) check(ctx context.Context, c jetstream.Consumer) {
	rctx, cancel := context.WithTimeout(ctx, rescueReadTimeout)
	defer cancel()
	info, err := c.Info(rctx)
	if err != nil {
		r.w.log.Debug("paused sink: could not read its consumer; checking again", zap.String("sink", r.w.name), zap.Error(err))
		return
	}
	st, err := r.w.js.Stream(rctx, info.Stream)
	if err != nil {
		r.w.log.Debug("paused sink: could not read its stream; checking again", zap.String("sink", r.w.name), zap.Error(err))
		return
	}
	r.maxAge = st.CachedInfo().Config.MaxAge
	age, ok := topology.OldestPending(rctx, st, info, time.Now())
	if !ok {
		return
	}
	if !decidePaused(age, r.maxAge, r.ordered).deadLetter {
		if r.swept[info.Stream] {
			r.w.log.Info("paused sink's oldest event is within the pause's reach again; no more dead letters",
				zap.String("sink", r.w.name), zap.String("stream", info.Stream))
			delete(r.swept, info.Stream)
		}
		return
	}
	if !r.swept[info.Stream] {
		r.swept[info.Stream] = true
		r.w.log.Warn("sink paused past the pause's reach: its events older than the reach are dead-lettered paused_past_max_age, "+
			"not dropped by max_age; after dispatcher sinks resume, replay them with dispatcher dlq replay --reason paused_past_max_age",
			zap.String("sink", r.w.name), zap.String("stream", info.Stream), zap.Duration("reach", PauseReach(r.maxAge)),
			zap.Duration("oldest", age))
	}
	r.sweep(ctx, c)
}

// sweep pulls c until it meets an event within the reach, the sink is
// resumed, or there is nothing left.
func (r *rescuer) sweep(ctx context.Context, c jetstream.Consumer) {
	var pin string
	if r.ordered {
		defer func() { r.unpin(ctx, c, pin) }()
	}
	for ctx.Err() == nil && r.w.gate.heldByOperator() && !r.w.fence.fenced() {
		fctx, cancel := context.WithTimeout(ctx, rescueFetchWait)
		opts := []jetstream.FetchOpt{jetstream.FetchContext(fctx)}
		if r.ordered {
			opts = append(opts, jetstream.FetchPriorityGroup(topology.OrderGroup))
		}
		batch, err := c.Fetch(rescueBatch, opts...)
		if err != nil {
			cancel()
			r.w.log.Debug("paused sink: sweep's pull failed; trying at the next check", zap.String("sink", r.w.name), zap.Error(err))
			return
		}
		n, within := 0, false
		for m := range batch.Messages() {
			n++
			if p := m.Headers().Get(pinHeader); p != "" {
				pin = p
			}
			within = !r.take(ctx, m, within) || within
		}
		cancel()
		if err := batch.Error(); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			r.w.log.Debug("paused sink: sweep's pull ended early", zap.String("sink", r.w.name), zap.Error(err))
		}
		if within || n == 0 {
			return
		}
	}
}

// take settles one swept message: dead-lettered past the reach, handed
// back otherwise (and, once within is set, whatever follows it). It
// reports whether the sweep goes on.
func (r *rescuer) take(ctx context.Context, m jetstream.Msg, within bool) (more bool) {
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Term() // as parseRoute does
		return true
	}
	age := time.Since(meta.Timestamp)
	f := decidePaused(age, r.maxAge, r.ordered)
	switch {
	case !r.w.gate.heldByOperator():
		_ = m.Nak() // resumed meanwhile: the sink pulls it now
		return false
	case within || !f.deadLetter:
		if f.handBack > 0 {
			_ = m.NakWithDelay(f.handBack)
		} else {
			_ = m.Nak()
		}
		return false
	}
	return r.deadLetter(ctx, m, age)
}

// deadLetter dead-letters a swept event past the reach, if it is the
// sink's: it goes through the worker's admission first, so an invalid
// envelope, an unknown destination or an event not routed here is
// settled as on any delivery. A record that cannot be written is handed
// back (the next check tries again) and ends the sweep.
func (r *rescuer) deadLetter(ctx context.Context, m jetstream.Msg, age time.Duration) (more bool) {
	w := r.w
	defer w.guard(ctx, m) // a panic dead-letters it (handler_panic); more stays false
	d, ev, targets, ok := w.parseRoute(ctx, job{msg: m})
	if !ok {
		return true
	}
	if err := w.checkDestinations(ctx, d, ev, targets); err != nil {
		w.log.Warn("paused sink: destinations not checked; handing the event back, the next check tries again",
			zap.String("sink", w.name), zap.String("event_id", clip(ev.ID)), zap.Error(err))
		_ = m.Nak()
		return false
	}
	if !slices.Contains(targets, w.name) {
		w.fence.skip(m)
		return true
	}
	rec := w.record(d, ev, w.name, outcome.PausedPastMaxAge,
		fmt.Errorf("sink paused by an operator past the pause's reach: the event was %s old, the events stream drops it at streams.max_age (%s); "+
			"dead-lettered without a request to the vendor: replay it after dispatcher sinks resume",
			age.Round(time.Millisecond), r.maxAge))
	// An ordered sink's later events of the key go on without it.
	rec.ReleasedBarrier = r.ordered && r.b.orderKey(ev) != ""
	if err := w.writeDeadLetter(ctx, rec); err != nil {
		w.log.Warn("paused sink: dead letter not written; handing the event back, the next check tries again",
			zap.String("sink", w.name), zap.String("event_id", clip(ev.ID)), zap.Error(err))
		_ = m.Nak()
		return false
	}
	_ = m.Ack()
	return true
}

// unpin lets an ordered sink's pin go after a sweep took it, so the
// replica pinned after the resumption need not wait for it to lapse.
func (r *rescuer) unpin(ctx context.Context, c jetstream.Consumer, pin string) {
	if pin == "" {
		return
	}
	uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rescueReadTimeout)
	defer cancel()
	info, err := c.Info(uctx)
	if err != nil || pinnedID(info) != pin {
		return // the pin times out by itself, or is another's now
	}
	if st, err := r.w.js.Stream(uctx, info.Stream); err == nil {
		_ = st.UnpinConsumer(uctx, info.Name, topology.OrderGroup)
	}
}
