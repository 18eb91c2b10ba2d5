package console

import (
	"context"
	"time"

	"github.com/chapar-dev/chapar/internal/deliveries"
	"github.com/chapar-dev/chapar/internal/dlq"
)

// maxFollowed bounds how many replayed events a replay job follows to
// their outcome: each is one lookup of its delivery records per view of
// the job while it is not settled.
const maxFollowed = 1000

// replayed is one event a replay put back on its sink's queue, and what
// became of it since (empty: not known yet).
type replayed struct {
	EventID, Sink string
	Run           int // the replay's run: the record's Replays + 1
	State         deliveries.State
}

// replayOutcome is what became of a replay job's events: delivered,
// dead-lettered again, retrying, or not yet tried.
type replayOutcome struct {
	Followed, Delivered, FailedAgain, Retrying, Waiting int
	// More says the job replayed more than it follows.
	More bool
}

// Settled says every followed event was delivered or failed again.
func (o replayOutcome) Settled() bool { return o.Retrying == 0 && o.Waiting == 0 }

// follow records a replayed dead letter, up to maxFollowed.
func (j *job) follow(r *dlq.Record) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if len(j.replayed) == maxFollowed {
		j.more = true
		return
	}
	j.replayed = append(j.replayed, replayed{EventID: r.EventID, Sink: r.Sink, Run: r.Replays + 1})
}

// recordsClockSlack is how much earlier than a job's start its events'
// records may be stamped by a server whose clock is behind the console's.
const recordsClockSlack = 5 * time.Minute

// outcome reads the delivery records of the followed events not yet
// delivered or failed again (those are final) and counts them all.
func (c *Console) outcome(ctx context.Context, j *job) (replayOutcome, bool) {
	if c.opts.Events == nil {
		return replayOutcome{}, false
	}
	j.mu.Lock()
	started := j.started
	pending := make([]int, 0, len(j.replayed))
	for i, r := range j.replayed {
		if r.State != deliveries.Delivered && r.State != deliveries.DeadLettered {
			pending = append(pending, i)
		}
	}
	j.mu.Unlock()
	for _, i := range pending {
		j.mu.Lock()
		r := j.replayed[i]
		j.mu.Unlock()
		// Only records of this run, written after the job started (less
		// a margin for the replicas' clocks): not the bucket's whole past.
		recs, err := c.opts.Events.Records(ctx, r.EventID, started.Add(-recordsClockSlack))
		if err != nil {
			break // counted as they were; the next view asks again
		}
		for _, rec := range recs {
			// Only what this run of the delivery did: the dead letter it
			// came from is the run before.
			if rec.Sink == r.Sink && rec.Replays >= r.Run {
				j.mu.Lock()
				j.replayed[i].State = rec.State
				j.mu.Unlock()
			}
		}
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	o := replayOutcome{Followed: len(j.replayed), More: j.more}
	for _, r := range j.replayed {
		switch r.State {
		case deliveries.Delivered:
			o.Delivered++
		case deliveries.DeadLettered:
			o.FailedAgain++
		case deliveries.Retrying:
			o.Retrying++
		default:
			o.Waiting++
		}
	}
	return o, true
}
