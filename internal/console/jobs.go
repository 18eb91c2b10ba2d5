package console

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/dlq"
)

const (
	actionReplay = "replay"
	actionPurge  = "purge"
)

// errBusy refuses a second job while one runs: a double-clicked confirm
// must not start two replays of the same filter.
var errBusy = errors.New("console: a job is running")

type jobSpec struct {
	Action string
	Filter dlq.Filter
	Form   filterForm
	Rate   float64
	Limit  int
}

// job is one replay or purge running in the background.
type job struct {
	ID      string
	spec    jobSpec
	started time.Time

	mu       sync.Mutex
	done     int // replayed or purged so far
	finished time.Time
	result   dlq.ReplayResult
	err      error
	// replayed are the events a replay put back, followed to their
	// outcome (outcome.go); more says there were more than followed.
	replayed []replayed
	more     bool
}

// jobView is a job as a page shows it.
type jobView struct {
	ID       string
	Action   string
	Form     filterForm
	Rate     float64
	Limit    int
	Started  time.Time
	Done     int
	Running  bool
	Finished time.Time
	Result   dlq.ReplayResult
	Error    string
	// Outcome is what became of a finished replay's events, when the
	// console can look them up (HasOutcome).
	Outcome    replayOutcome
	HasOutcome bool
}

func (j *job) snapshot() jobView {
	j.mu.Lock()
	defer j.mu.Unlock()
	v := jobView{ID: j.ID, Action: j.spec.Action, Form: j.spec.Form, Rate: j.spec.Rate, Limit: j.spec.Limit,
		Started: j.started, Done: j.done, Running: j.finished.IsZero(), Finished: j.finished, Result: j.result}
	if j.err != nil {
		v.Error = j.err.Error()
	}
	return v
}

// jobs are the running job and the last finished ones, newest last.
type jobs struct {
	keep int
	mu   sync.Mutex
	list []*job
}

func (js *jobs) get(id string) *job {
	js.mu.Lock()
	defer js.mu.Unlock()
	for _, j := range js.list {
		if j.ID == id {
			return j
		}
	}
	return nil
}

// add registers j unless a job is running.
func (js *jobs) add(j *job) error {
	js.mu.Lock()
	defer js.mu.Unlock()
	for _, o := range js.list {
		o.mu.Lock()
		running := o.finished.IsZero()
		o.mu.Unlock()
		if running {
			return errBusy
		}
	}
	js.list = append(js.list, j)
	if len(js.list) > js.keep {
		js.list = js.list[len(js.list)-js.keep:]
	}
	return nil
}

func newJobID() (string, error) {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("console: job id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// start runs a job in the background, under the console's context (not
// the request's: closing the tab does not stop a replay; stopping the
// dispatcher does, between two dead letters).
func (c *Console) start(s jobSpec) (*job, error) {
	id, err := newJobID()
	if err != nil {
		return nil, err
	}
	j := &job{ID: id, spec: s, started: time.Now()}
	if err := c.jobs.add(j); err != nil {
		return nil, err
	}
	progress := func(n int) { j.mu.Lock(); j.done = n; j.mu.Unlock() }
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		var res dlq.ReplayResult
		var err error
		switch s.Action {
		case actionReplay:
			res, err = c.opts.DeadLetters.Replay(c.ctx, s.Filter, dlq.ReplayOptions{Rate: s.Rate, Limit: s.Limit, Progress: progress, Replayed: j.follow})
		case actionPurge:
			var n int
			n, err = c.opts.DeadLetters.PurgeProgress(c.ctx, s.Filter, progress)
			res = dlq.ReplayResult{Matched: n}
		}
		j.mu.Lock()
		j.result, j.err, j.finished = res, err, time.Now()
		if s.Action == actionPurge {
			j.done = res.Matched
		} else {
			j.done = res.Replayed
		}
		j.mu.Unlock()
		c.log.Info("job finished", zap.String("job", j.ID), zap.String("action", s.Action),
			zap.Int("matched", res.Matched), zap.Int("replayed", res.Replayed), zap.Int("skipped", res.Skipped), zap.Error(err))
	}()
	return j, nil
}

// all returns the jobs, newest first.
func (js *jobs) all() []*job {
	js.mu.Lock()
	defer js.mu.Unlock()
	out := slices.Clone(js.list)
	slices.Reverse(out)
	return out
}
