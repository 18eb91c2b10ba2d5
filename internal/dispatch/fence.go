package dispatch

// Config fencing: replicas that run different routes for one sink never
// skip each other's events.
//
// Every replica shares a sink's events consumer, and a replica acks
// ("skips") what its own routes do not send to the sink. During a rolling
// deploy that widens the routes, an old replica would ack events the new
// routes deliver, and they would never reach the vendor. So each replica
// writes its fence (a fingerprint of what decides a skip: the routes that
// name the sink, and its order key) into the sink's events consumer when
// it binds: the last replica to start owns the sink. A skip is not acked
// when it is decided but queued, and acked only once a read of the
// consumer that began after the decision shows the fence is still this
// replica's; otherwise it is handed back, so a replica of the owning
// config judges it. A replica whose fence is not the consumer's pulls
// nothing for the sink (its gate is shut), says so once in the log and in
// chapar_sink_fenced, and goes on checking, so a rollback hands the sink
// back; and once no running replica holds the owner's fence (its config's
// replicas stopped), it says so, naming the remedy. Deliveries are not
// held: an event this replica's routes send to the sink was delivered
// under the config that owned it when it arrived.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/topology"
)

// Fingerprint is what decides which events a sink skips, hashed: the
// routes that name it (their types, names and filters, in table order)
// and its order key. A route without a filter hashes as it did before
// filters existed. Settings that change how, not whether, an event is
// delivered (timeouts, credentials) are not in it: replicas that differ
// only there may share the sink.
//
// The consumer's filter (topology.EventFilter) is in it when it reads by
// type: the filter is part of what the owner writes, with the fence, in
// one update, and two replicas that would filter differently (one with
// streams.filter_by_route off, or a sink that is one's first and the
// other's second) must not both believe they own the sink. A filter of
// the whole stream adds nothing, so fences of before filters stand.
func Fingerprint(sink string, routes []config.Route, order *config.Order, filter topology.EventFilter) string {
	type route struct {
		Types  []string `json:"t,omitempty"`
		Names  []string `json:"n,omitempty"`
		Filter string   `json:"f,omitempty"`
	}
	var what struct {
		Routes   []route   `json:"r"`
		Order    string    `json:"o,omitempty"`
		Subjects *[]string `json:"s,omitempty"`
	}
	if filter.ByType {
		types := append([]string{}, filter.Types...)
		what.Subjects = &types
	}
	what.Routes = []route{}
	for _, r := range routes {
		if slices.Contains(r.Sinks, sink) {
			what.Routes = append(what.Routes, route{Types: r.Types, Names: r.Names, Filter: r.Filter})
		}
	}
	if order != nil {
		what.Order = order.Key
	}
	b, _ := json.Marshal(what) // plain strings: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// fenceCheckSpacing is the least time between two fence checks while
// skips are queued: at most 50 consumer reads a second per sink and
// replica, and a skip waits about that long for its ack.
const fenceCheckSpacing = 20 * time.Millisecond

// fence holds a sink's skips until a check shows the sink is still this
// replica's, and shuts the sink's gate while it is not.
type fence struct {
	sink string
	mine string
	// read returns the fence the sink's consumer carries now.
	read func(ctx context.Context) (string, error)
	// every is how often it checks while nothing is queued, so a replica
	// that is not skipping still learns it lost (or regained) the sink.
	every time.Duration
	// flushAt is how many queued skips trigger a check at once: a
	// fraction of max_ack_pending, which queued skips count against.
	flushAt int
	gate    *gate
	log     *zap.Logger
	changed func(sink string, fenced bool)
	// orphaned says whether no running replica holds the fence the
	// consumer carries (topology.OrphanedFence): nil, never asked.
	orphaned func(ctx context.Context, theirs string) (bool, error)
	// lookedAt is when it last asked (or was fenced off), and reported
	// the owner's fence it said was orphaned; run's alone.
	lookedAt time.Time
	reported string

	mu    sync.Mutex
	owned bool
	owner string // the fence the consumer carried when last read
	queue []jetstream.Msg
	kick  chan struct{}
}

func newFence(sink, mine string, read func(context.Context) (string, error), ackWait time.Duration, maxAckPending int,
	g *gate, log *zap.Logger, changed func(string, bool)) *fence {
	return &fence{
		sink: sink, mine: mine, read: read, every: min(max(ackWait/4, 100*time.Millisecond), time.Second),
		flushAt: max(maxAckPending/4, 1), gate: g, log: log, changed: changed,
		owned: true, owner: mine, kick: make(chan struct{}, 1),
	}
}

// lastOwner is the fence the sink's consumer carried when last read (this
// replica's own until a read says otherwise). A healer recreating a lost
// events consumer writes it, not the fence its replica bound with: a
// fenced-off replica's healer must not hand the sink back to its own,
// older config.
func (f *fence) lastOwner() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.owner
}

// skip acks msg, which this replica's routes do not send to the sink,
// once the sink is known to be still this replica's; if it is not, msg
// is handed back for the owner to judge.
func (f *fence) skip(msg jetstream.Msg) {
	f.mu.Lock()
	if !f.owned {
		f.mu.Unlock()
		_ = msg.Nak()
		return
	}
	f.queue = append(f.queue, msg)
	n := len(f.queue)
	f.mu.Unlock()
	if n == 1 || n >= f.flushAt {
		select {
		case f.kick <- struct{}{}:
		default:
		}
	}
}

// run checks the fence until ctx is done, settling the queued skips after
// each check; on return, what is still queued is handed back.
func (f *fence) run(ctx context.Context) {
	tick := time.NewTicker(f.every)
	defer tick.Stop()
	defer f.settle(nil, false)
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.kick:
		case <-tick.C:
		}
		// Taken before the read is sent: every skip in batch was decided
		// before the state the read returns.
		f.mu.Lock()
		batch := f.queue
		f.queue = nil
		f.mu.Unlock()
		rctx, cancel := context.WithTimeout(ctx, brokerTimeout)
		theirs, err := f.read(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				f.settle(batch, false)
				return
			}
			// Unknown (the consumer is gone, the broker unreachable):
			// judge nothing, hand the skips back a little later.
			f.log.Debug("fence not checked; handing skips back", zap.String("sink", f.sink), zap.Error(err))
			for _, m := range batch {
				_ = m.NakWithDelay(time.Second)
			}
			continue
		}
		f.settle(batch, theirs == f.mine)
		f.setOwned(theirs)
		f.reportOrphaned(ctx, theirs)
		if sleep(ctx, fenceCheckSpacing, nil) != nil {
			return
		}
	}
}

// orphanCheckEvery is how often a fenced-off replica asks whether the
// owner's fence is held by a running replica: a read of the presence
// records and of the sink's consumers.
const orphanCheckEvery = 5 * time.Second

// reportOrphaned says, once per owner's fence, that no running replica
// holds the fence that keeps this replica off the sink
// (topology.OrphanedFence): its config's replicas stopped (a canary
// stopped, the others left running), or a change of the consumer's
// config put back a fence read before a bind. Nobody consumes the sink
// then, until a replica binds it. The replica does not take the sink
// back itself: an owner cut off from NATS looks the same from here, and
// this config would ack as skips what the owner's routes deliver (a
// review proved it, with the owner's presence record unwritable and its
// breaker open). Restarting this replica takes it, once an operator
// knows the owner is gone.
func (f *fence) reportOrphaned(ctx context.Context, theirs string) {
	now := time.Now()
	if theirs == f.mine || f.orphaned == nil {
		f.lookedAt, f.reported = time.Time{}, ""
		return
	}
	if f.reported == theirs {
		return
	}
	if f.lookedAt.IsZero() {
		f.lookedAt = now // fenced off just now: its owner has just bound
		return
	}
	if now.Sub(f.lookedAt) < orphanCheckEvery {
		return
	}
	f.lookedAt = now
	rctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	defer cancel()
	orphaned, err := f.orphaned(rctx, theirs)
	if err != nil {
		f.log.Debug("could not tell whether the sink's owner runs", zap.String("sink", f.sink), zap.Error(err))
		return
	}
	if !orphaned {
		return
	}
	f.reported = theirs
	f.log.Warn("no running replica holds the fence that owns this sink, so nobody consumes it: the replicas of the config "+
		"that bound it last stopped (or are cut off from NATS), or a change of the consumer raced a bind. If that config is gone "+
		"for good, restart this replica (its config then owns the sink); if it is coming back, wait for it",
		zap.String("sink", f.sink), zap.String("fence", f.mine), zap.String("owner_fence", theirs))
}

// settle acks the batch if the sink is ours, else hands it back.
func (f *fence) settle(batch []jetstream.Msg, ours bool) {
	if batch == nil {
		f.mu.Lock()
		batch = f.queue
		f.queue = nil
		f.mu.Unlock()
	}
	for _, m := range batch {
		if ours {
			_ = m.Ack()
		} else {
			_ = m.Nak()
		}
	}
}

// setOwned records whether the consumer carries this replica's fence,
// shuts or opens the gate, and says so on a change.
func (f *fence) setOwned(theirs string) {
	owned := theirs == f.mine
	f.mu.Lock()
	was := f.owned
	f.owned = owned
	f.owner = theirs
	f.mu.Unlock()
	if owned == was {
		return
	}
	f.gate.setFenced(!owned)
	if f.changed != nil {
		f.changed(f.sink, !owned)
	}
	if owned {
		f.log.Info("this replica's config owns the sink again; consuming", zap.String("sink", f.sink), zap.String("fence", f.mine))
		return
	}
	f.log.Warn("another replica runs other routes for this sink and started after this one; "+
		"not consuming it until that config is gone or this one restarts (a rolling deploy in progress?)",
		zap.String("sink", f.sink), zap.String("fence", f.mine), zap.String("owner_fence", theirs))
}

// fenced reports whether another config owns the sink.
func (f *fence) fenced() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.owned
}
