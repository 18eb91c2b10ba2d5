package console

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/dlq"
)

// waitingEvery is how old the sinks page's counts of dead letters may
// be: each count is a read of the whole dead-letter stream (there is no
// count by sink on the server: a replayed or purged record leaves a
// tombstone on its subject), and the page refreshes every 2 seconds.
const waitingEvery = 10 * time.Second

// waiting counts the dead letters waiting per sink, deployment-wide: read
// from the dead-letter stream, not this process's counters. The first
// page view reads them; later ones get the last counts and, when they
// are older than waitingEvery, start one read in the background.
type waiting struct {
	mu      sync.Mutex
	at      time.Time
	counts  map[string]int
	err     error
	reading bool
}

// sinkCounts returns the counts, reading them if they were never read.
func (c *Console) sinkCounts(ctx context.Context) (map[string]int, error) {
	w := &c.waiting
	w.mu.Lock()
	if w.at.IsZero() {
		w.mu.Unlock()
		c.readWaiting(ctx)
		w.mu.Lock()
	} else if time.Since(w.at) > waitingEvery && !w.reading {
		w.reading = true
		c.wg.Go(func() {
			rctx, cancel := context.WithTimeout(c.ctx, readTimeout)
			defer cancel()
			c.readWaiting(rctx)
		})
	}
	defer w.mu.Unlock()
	return w.counts, w.err
}

func (c *Console) readWaiting(ctx context.Context) {
	counts := map[string]int{}
	err := c.opts.DeadLetters.Each(ctx, dlq.Filter{}, func(r *dlq.Record) bool {
		counts[r.Sink]++
		return true
	})
	w := &c.waiting
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reading, w.at = false, time.Now()
	if err != nil {
		c.log.Warn("counting dead letters per sink", zap.Error(err))
		w.err = err
		return
	}
	w.counts, w.err = counts, nil
}
