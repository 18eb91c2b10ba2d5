package dispatch

import (
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/chapar-dev/chapar/internal/config"
)

// pacer is a sink's rate limit, adaptive on throttling: a 429 halves the
// pace (never below a tenth of the configured rate) and each second the
// vendor accepts without throttling it climbs back by a twentieth
// (additive increase, multiplicative decrease). It never exceeds the
// configured rate. It is per replica (see config.RateLimit).
type pacer struct {
	limiter *rate.Limiter
	max     rate.Limit
	onSet   func(perSecond float64)

	mu      sync.Mutex
	changed time.Time // last decrease or increase
}

func newPacer(rl *config.RateLimit, onSet func(float64)) *pacer {
	if rl == nil {
		return nil
	}
	p := &pacer{limiter: rate.NewLimiter(rate.Limit(rl.PerSecond), rl.Burst), max: rate.Limit(rl.PerSecond), onSet: onSet}
	p.set(p.max)
	return p
}

// reserve takes the right to one request now or after the returned wait.
// cancel gives it back (when the caller will not wait that long).
func (p *pacer) reserve() (wait time.Duration, cancel func()) {
	r := p.limiter.Reserve()
	return r.Delay(), r.Cancel
}

// throttled lowers the pace after a 429.
func (p *pacer) throttled(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	// One decrease per half second: the requests already in flight when
	// the vendor started throttling must not divide the pace again.
	if now.Sub(p.changed) < 500*time.Millisecond {
		return
	}
	p.changed = now
	p.set(max(p.limiter.Limit()/2, p.max/10))
}

// accepted lets the pace climb back while the vendor accepts.
func (p *pacer) accepted(now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	cur := p.limiter.Limit()
	if cur >= p.max || now.Sub(p.changed) < time.Second {
		return
	}
	p.changed = now
	p.set(min(cur+p.max/20, p.max))
}

func (p *pacer) set(l rate.Limit) {
	p.limiter.SetLimit(l)
	if p.onSet != nil {
		p.onSet(float64(l))
	}
}
