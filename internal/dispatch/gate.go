package dispatch

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sony/gobreaker/v2"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/sinks"
)

// gate says when a sink may call its vendor. It joins three things a sink
// must respect, so a worker asks one question:
//
//   - the circuit breaker (sony/gobreaker): only transient failures trip
//     it, so one bad event (a 400) never stops a healthy vendor; throttling
//     (429) does not either, the pause handles it. Half-open, exactly one
//     request is the probe.
//   - the vendor's Retry-After: it throttles the account, not one event,
//     so the whole sink pauses, in every replica (pause.go), and after it
//     one request of the whole deployment is the probe.
//   - a ramp: after a pause or an outage the sink resumes with one request
//     and doubles its concurrency with each success, so a recovering
//     vendor is not hit by every worker of every replica at once.
//
// While the gate is shut the sink pulls nothing from JetStream.
type gate struct {
	cb      *gobreaker.TwoStepCircuitBreaker[struct{}]
	timeout time.Duration // breaker open → half-open
	max     int           // the sink's concurrency

	mu          sync.Mutex
	changed     chan struct{} // closed and replaced on every change
	openUntil   time.Time     // when an open breaker half-opens
	pausedUntil time.Time
	fenced      bool // another config owns the sink (fence.go)
	// held: an operator paused the sink (dispatcher sinks pause,
	// operator.go), until resumed; heldFrom is when this replica learned
	// it, heldSpan the last pause it saw end (from, to), so that time
	// paused does not count against an event's max_elapsed.
	held     bool
	heldFrom time.Time
	heldSpan [2]time.Time
	limit    int // requests allowed in flight now (the ramp)
	inFlight int
	// needProbe: a pause began and its probe has not been answered; the
	// next request must claim the probe (shared) first.
	needProbe bool
	probing   bool      // a worker is claiming it or making it
	probeFor  time.Time // the pause's end the probe is for
	heldUntil time.Time // another replica's probe is out until then

	pace   *pacer       // nil: no rate limit
	shared *sharedPause // nil: pauses are this replica's own
	// sending observes the requests in flight (Observer.InFlight), moved
	// under mu with inFlight: a pause that shuts the gate finds every
	// request that took a slot before it counted (nil: none).
	sending func(delta int)
	log     *zap.Logger
}

func newGate(sink string, s retry.BreakerSettings, concurrency int, log *zap.Logger, onChange func(string, retry.State)) *gate {
	g := &gate{timeout: s.OpenTimeout, max: concurrency, limit: concurrency, changed: make(chan struct{}), log: log}
	g.cb = gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        sink,
		MaxRequests: 1,
		Interval:    s.Interval,
		Timeout:     s.OpenTimeout,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= s.FailureThreshold },
		IsSuccessful: func(err error) bool {
			return !retry.IsTransient(err)
		},
		IsExcluded: func(err error) bool {
			if err == nil {
				return false // before se, which escapes: no allocation per success
			}
			var se *sinks.Error
			return errors.Is(err, errNotARequest) || errors.As(err, &se) && se.Status == 429
		},
		OnStateChange: func(name string, from, to gobreaker.State) {
			log.Warn("circuit breaker changed state", zap.String("sink", name),
				zap.Stringer("from", from), zap.Stringer("to", to))
			g.mu.Lock()
			switch to {
			case gobreaker.StateOpen:
				g.openUntil = time.Now().Add(s.OpenTimeout)
			case gobreaker.StateClosed:
				g.limit = 1 // ramp up again
			}
			g.notifyLocked()
			g.mu.Unlock()
			if onChange != nil {
				onChange(name, to)
			}
		},
	})
	return g
}

func (g *gate) notifyLocked() {
	close(g.changed)
	g.changed = make(chan struct{})
}

// State is the breaker's state.
func (g *gate) State() retry.State { return g.cb.State() }

// shutFor says how long the sink must not send: the breaker is open or the
// vendor asked to wait; 0 when it may. It also returns the channel closed
// at the next change. (The breaker is never called under g.mu: it calls
// back into OnStateChange, which takes g.mu.)
func (g *gate) shutFor(now time.Time) (time.Duration, <-chan struct{}) {
	open := g.cb.State() == gobreaker.StateOpen
	g.mu.Lock()
	defer g.mu.Unlock()
	wait := max(g.pausedUntil.Sub(now), g.heldUntil.Sub(now))
	if g.fenced || g.held {
		wait = max(wait, time.Second)
	}
	if open {
		wait = max(wait, g.openUntil.Sub(now), time.Millisecond)
	}
	return max(wait, 0), g.changed
}

// shutLocked is shutFor's own part (g.mu held): an operator's pause, a
// fence, a vendor's pause or another replica's probe.
func (g *gate) shutLocked(now time.Time) bool {
	return g.held || g.fenced || now.Before(g.pausedUntil) || now.Before(g.heldUntil)
}

// sent moves the observed count of requests in flight (g.mu held).
func (g *gate) sent(delta int) {
	if g.sending != nil {
		g.sending(delta)
	}
}

// handBackAfter is when a message the gate kept shut for wait should come
// back. While another replica's probe is out its answer usually comes in
// milliseconds, so the message comes back within a second, not at the end
// of the probe's lease.
func (g *gate) handBackAfter(wait time.Duration, now time.Time) time.Duration {
	open := g.cb.State() == gobreaker.StateOpen
	g.mu.Lock()
	defer g.mu.Unlock()
	if open || !g.heldUntil.After(g.pausedUntil) {
		return wait
	}
	return max(min(wait, time.Second), g.pausedUntil.Sub(now))
}

// waitOpen blocks until the sink may send: the consume loop calls it
// before pulling, so an outage leaves events in JetStream untouched.
func (g *gate) waitOpen(ctx context.Context) error {
	for {
		wait, changed := g.shutFor(time.Now())
		if wait == 0 {
			return nil
		}
		if err := sleep(ctx, wait, changed); err != nil {
			return err
		}
	}
}

// pause shuts the sink for d (a vendor's Retry-After), unless it is paused
// for longer already; it resumes with one request. The pause is shared
// with the other replicas (pause.go) after it applies here.
func (g *gate) pause(d time.Duration) {
	until := time.Now().Add(d)
	g.mu.Lock()
	extended := g.extendLocked(until)
	g.mu.Unlock()
	if extended && g.shared != nil {
		g.shared.extend(until)
	}
}

// setFenced shuts the sink while another replica's config owns it.
func (g *gate) setFenced(fenced bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.fenced = fenced
	g.notifyLocked()
}

// setHeld shuts (or opens) the sink for an operator's pause. It reports
// whether that changed anything.
func (g *gate) setHeld(held bool, now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.held == held {
		return false
	}
	g.held = held
	if held {
		g.heldFrom = now
	} else {
		g.heldSpan = [2]time.Time{g.heldFrom, now}
	}
	g.notifyLocked()
	return true
}

// heldByOperator says whether an operator paused the sink.
func (g *gate) heldByOperator() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.held
}

// heldWithin is how much of [from, now] the sink was paused by an
// operator, as far as this replica saw: the pause under way and the last
// one that ended.
func (g *gate) heldWithin(from, now time.Time) time.Duration {
	g.mu.Lock()
	defer g.mu.Unlock()
	overlap := func(a, b time.Time) time.Duration {
		a, b = later(a, from), earlier(b, now)
		return max(b.Sub(a), 0)
	}
	d := overlap(g.heldSpan[0], g.heldSpan[1])
	if g.held {
		d += overlap(g.heldFrom, now)
	}
	return d
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func earlier(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

// errNotARequest is what the breaker hears of a slot given back without a
// request the vendor answered: a lost race for the slot, a request cut
// short by Chapar's own shutdown, a sink that panicked. It is excluded, so
// only the vendor's behaviour opens or closes the breaker; a vendor
// timeout is a failure like a 5xx, so a hung vendor opens it.
var errNotARequest = errors.New("dispatch: no request the vendor answered")

func (g *gate) extendLocked(until time.Time) bool {
	if !until.After(g.pausedUntil) {
		return false
	}
	g.pausedUntil = until
	g.limit = 1
	g.needProbe = true
	g.notifyLocked()
	return true
}

// learn applies what the deployment's pause record says (pause.go): a
// pause extends this one, another replica's probe holds this replica
// until its answer, and a resumption ends the wait for a probe. A
// resumption of an older pause than this replica's own is not one of
// this pause.
func (g *gate) learn(v pauseView) {
	g.mu.Lock()
	defer g.mu.Unlock()
	now := time.Now()
	if v.until.After(now) {
		g.extendLocked(v.until)
	}
	g.heldUntil = v.heldUntil
	if v.resumed && !v.until.Add(resumedCovers).Before(g.pausedUntil) {
		g.needProbe = false
	}
	g.notifyLocked()
}

// errShut says the sink may not send for a while: hand the message back.
type errShut struct{ wait time.Duration }

func (e errShut) Error() string { return "sink is shut for " + e.wait.String() }

// holdAtMost is how long a worker keeps a message while the gate is shut
// before handing it back: short waits (the ramp, a half-open probe in
// flight, a Retry-After about to end) are waited out, long ones free the
// worker and the message.
const holdAtMost = 500 * time.Millisecond

// acquire waits for the right to make one vendor request. It returns the
// function that reports the request's result, and whether this request is
// the breaker's probe (a failure then is the vendor's, not the event's).
// If the sink stays shut longer than holdAtMost it returns errShut.
func (g *gate) acquire(ctx context.Context) (done func(error), vendorDown bool, err error) {
	deadline := time.Now().Add(holdAtMost)
	for {
		now := time.Now()
		wait, changed := g.shutFor(now)
		if wait > 0 && now.Add(wait).After(deadline) {
			return nil, false, errShut{wait: g.handBackAfter(wait, now)}
		}
		if wait == 0 {
			g.mu.Lock()
			room := g.inFlight < g.limit
			g.mu.Unlock()
			wait = holdAtMost // at the ramp's limit: wait for a release
			if room && g.pace != nil {
				// The sink's pace: a short wait is waited out, a long
				// one hands the message back.
				if wait, cancel := g.pace.reserve(); wait > holdAtMost {
					cancel()
					return nil, false, errShut{wait: wait}
				} else if wait > 0 {
					if err := sleep(ctx, wait, nil); err != nil {
						cancel()
						return nil, false, err
					}
				}
			}
			if room {
				report, err := g.cb.Allow()
				if err == nil {
					probe := g.cb.State() == gobreaker.StateHalfOpen
					g.mu.Lock()
					// Shut again since shutFor looked (the pace's wait,
					// up to holdAtMost): an operator's pause, a fence or a
					// vendor's pause that took hold meanwhile stops this
					// request; the loop finds it shut and waits or hands
					// the message back.
					if g.inFlight < g.limit && !g.probing && !g.shutLocked(time.Now()) {
						g.inFlight++
						g.sent(1)
						claim := g.needProbe && g.shared != nil
						g.probing = claim
						g.mu.Unlock()
						if !claim {
							return func(err error) { g.release(report, err) }, probe, nil
						}
						if g.claimProbe(ctx) {
							return func(err error) { g.release(report, err); g.probeEnded(err) }, probe, nil
						}
						g.mu.Lock()
						g.inFlight--
						g.sent(-1)
						g.notifyLocked()
					}
					g.mu.Unlock()
					report(errNotARequest) // lost the race for the slot or the probe: not a request
				}
				// Half-open with the probe in flight: wait for its result.
				wait = 50 * time.Millisecond
			}
		}
		if err := sleep(ctx, min(wait, max(time.Until(deadline), time.Millisecond)), changed); err != nil {
			return nil, false, err
		}
		if time.Now().After(deadline) {
			if w, _ := g.shutFor(time.Now()); w > 0 {
				return nil, false, errShut{wait: g.handBackAfter(w, time.Now())}
			}
			if g.cb.State() == gobreaker.StateHalfOpen {
				// The probe is still out: free the worker and the message
				// rather than hold them past ack_wait on a slow vendor.
				return nil, false, errShut{wait: max(g.timeout/4, time.Second)}
			}
			deadline = time.Now().Add(holdAtMost) // at the ramp's limit: keep trying
		}
	}
}

// claimProbe asks the deployment whether the request about to be made,
// the first after a pause, may be its probe (pause.go). It reports true if
// it may go: the claim won, the pause was already resolved, or the broker
// did not answer in time (then it is this replica's own probe, as without
// sharing). False: another replica's probe is out or the pause is longer;
// the gate now says until when.
func (g *gate) claimProbe(ctx context.Context) bool {
	g.mu.Lock()
	localUntil := g.pausedUntil
	g.probeFor = localUntil
	g.mu.Unlock()
	res, err := g.shared.claim(ctx, localUntil)
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case err != nil:
		if !errors.Is(err, errNotShared) {
			g.log.Warn("could not claim the probe after a pause from the other replicas; probing alone",
				zap.String("sink", g.cb.Name()), zap.Error(err))
		}
		g.needProbe, g.probing = false, false
		return true
	case res.verdict == claimNone:
		g.needProbe, g.probing = false, false
		return true
	case res.verdict == claimWait:
		g.probing = false
		if res.view.until.After(time.Now()) {
			g.extendLocked(res.view.until)
		}
		g.heldUntil = res.view.heldUntil
		return false
	}
	return true // won: probing until probeEnded
}

// probeEnded shares the end of this replica's probe: answered without a
// new pause, the deployment resumes (each replica from one request);
// throttled again, the pause the worker set before releasing the request
// replaces the claim; not made at all (shutdown), the claim is released
// for another replica.
func (g *gate) probeEnded(err error) {
	var se *sinks.Error
	answered := !errors.Is(err, errNotARequest)
	g.mu.Lock()
	// Throttled: its answer (or, in a batch, one item's) paused the sink
	// again.
	throttled := errors.As(err, &se) && se.Transient && se.RetryAfter > 0 || g.pausedUntil.After(g.probeFor)
	g.probing = false
	if answered && !throttled {
		g.needProbe = false
	}
	g.notifyLocked()
	g.mu.Unlock()
	if !throttled {
		g.shared.finished(answered)
	}
}

func (g *gate) release(report func(error), err error) {
	report(err)
	if g.pace != nil {
		var se *sinks.Error
		switch {
		case errors.As(err, &se) && se.Status == 429:
			g.pace.throttled(time.Now())
		case err == nil:
			g.pace.accepted(time.Now())
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.inFlight--
	g.sent(-1)
	if err == nil && g.limit < g.max {
		g.limit = min(g.limit*2, g.max)
	}
	g.notifyLocked()
}

// sleep waits for d, a change, or ctx.
func sleep(ctx context.Context, d time.Duration, changed <-chan struct{}) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-changed:
	case <-t.C:
	}
	return nil
}
