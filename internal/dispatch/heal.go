package dispatch

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/topology"
)

// healEvery is how often a consumer is looked at: how soon a loss no pull
// reported is noticed, and how stale the ack floor it restarts from may be.
const healEvery = 5 * time.Second

// healSettle is how long a loss is let settle before the consumer is
// recreated (see heal).
const healSettle = time.Second

// healer keeps one of a sink's durable consumers in existence. A consumer
// can vanish under a running dispatcher: an operator's `nats consumer rm`,
// or an R1 consumer lost with its server. Its position goes with it, so the
// healer remembers it: every healEvery it reads the consumer's ack floor
// (everything at or below it is acked), and when the consumer is gone it
// recreates it, as it was, starting just above that floor. What was acked
// since is delivered again (at-least-once); nothing unacked is skipped, as
// long as the stream still holds it (see docs/design.md on retention).
//
// A loss is counted (Observer.ConsumerLost, which /readyz reads: the sink
// is not ready until ConsumerBack) and logged once. One healer per
// consumer, one goroutine (run) doing every look-up and recreation.
type healer struct {
	e      *engine
	sink   string
	stream string
	// cfg is the consumer's config as the server had it when last read
	// (at bind, then at each look): what it is recreated with. Not the
	// config this replica bound with: another config's bind since (one
	// that made the sink the lead, or owns it with another filter, fence
	// or ack_wait) changed it, and a recreation from the bind's copy
	// undid that (issue 20: the lead mark dropped, and a stray the lead
	// left to the sink judged by no one). Nor derived again from this
	// replica's config, as a bind would: the owner may be another config,
	// whose routes this replica does not have, and what its bind wrote is
	// known only from the server. At most healEvery stale: a fence
	// changed since is the fence's to tell (the filter is then the whole
	// stream), a mark the lead's.
	cfg jetstream.ConsumerConfig
	// lead says the consumer was marked the lead (topology.LeadMetadata)
	// when this healer saw it, at bind or at a look since, or its floor
	// record says so: it is recreated marked. A mark is never taken off
	// a sink's consumers (only removing the sink deletes them), so a
	// mark once seen stands, whatever a later read or a recreation by a
	// replica that had not seen it says.
	lead bool
	// instance is when the consumer last read was created: a new one
	// (recreated by any replica) is checked once against the floor
	// record for a mark it lacks.
	instance time.Time
	// restoring says putting the mark back failed at the last look
	// (logged once).
	restoring bool
	// sweep, for an events consumer, checks what a consumer found
	// recreated unmarked passed over off its filter before the mark was
	// put back (the sink's leadSweep, on partition); nil: not checked.
	// sweeps are those running, waited for as the healer stops.
	sweep     func(context.Context, leadSweep)
	partition int
	sweeps    sync.WaitGroup
	// fromFloor: an events consumer restarts above its ack floor; a
	// retries consumer's work-queue stream holds only what it has not
	// acked, so it restarts with its own policy (all of it).
	fromFloor bool
	// fence, for an events consumer, is the fence to recreate it with:
	// the one it carried when last read (fence.lastOwner), not the one
	// in cfg, which is this replica's as it bound and may be stale.
	fence func() string

	floor atomic.Uint64 // the ack floor's stream sequence when last seen
	nudge chan struct{} // look now (a pull said the consumer is gone)
	// rec, for an events consumer, keeps its floor where it survives the
	// consumer (nil: not kept).
	rec *floorRecord

	mu sync.Mutex
	up chan struct{} // closed while the consumer is believed to exist
	// keepers hold the messages pulled from this consumer (consume):
	// orphaned when its instance is gone (orphanHeld).
	keepers []*keeper
}

// attach has the healer orphan k's messages when the consumer instance
// that delivered them is gone (orphanHeld). Safe on a nil healer.
func (h *healer) attach(k *keeper) {
	if h == nil {
		return
	}
	h.mu.Lock()
	h.keepers = append(h.keepers, k)
	h.mu.Unlock()
}

// orphanHeld lets go, unsettled, of every message pulled from the
// consumer instance that is gone (keeper.orphanAll): called as the loss
// is seen (heal), and when a look finds an instance it did not know,
// made by another replica. A stream made again reuses the old events'
// sequences, and so their ack subjects.
func (h *healer) orphanHeld() {
	h.mu.Lock()
	ks := slices.Clone(h.keepers)
	h.mu.Unlock()
	for _, k := range ks {
		k.orphanAll()
	}
}

func newHealer(e *engine, sink string, c jetstream.Consumer, fromFloor bool) *healer {
	info := c.CachedInfo()
	h := &healer{e: e, sink: sink, stream: info.Stream, cfg: info.Config, lead: topology.IsLead(info), instance: info.Created, fromFloor: fromFloor,
		nudge: make(chan struct{}, 1), up: make(chan struct{})}
	close(h.up)
	h.floor.Store(info.AckFloor.Stream)
	return h
}

// healing is a consumer with its healer: consume finds the healer on it.
type healing struct {
	jetstream.Consumer
	h *healer
}

// healerOf returns c's healer, nil for a consumer without one.
func healerOf(c jetstream.Consumer) *healer {
	if hc, ok := c.(*healing); ok {
		return hc.h
	}
	return nil
}

// suspect is for a pull that reported the consumer deleted or not found
// (ErrConsumerDeleted, ErrConsumerNotFound): the healer looks at once
// instead of at its next round, and waitUp waits for its answer. It is
// safe on a nil healer. The orderer's pull (order.go) can call it the same
// way: suspect(o.cons) then waitUp before pulling again.
func (h *healer) suspect() {
	if h == nil {
		return
	}
	h.mu.Lock()
	select {
	case <-h.up:
		h.up = make(chan struct{})
	default:
	}
	h.mu.Unlock()
	select {
	case h.nudge <- struct{}{}:
	default:
	}
}

// look has the consumer looked at now, without suspecting it (a missed
// heartbeat: more often a slow server than a lost consumer). Safe on a nil
// healer.
func (h *healer) look() {
	if h == nil {
		return
	}
	select {
	case h.nudge <- struct{}{}:
	default:
	}
}

// waitUp blocks until the consumer is believed to exist (at once, unless
// it was suspected or found gone), or ctx ends. Safe on a nil healer.
func (h *healer) waitUp(ctx context.Context) error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	up := h.up
	h.mu.Unlock()
	select {
	case <-up:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (h *healer) markUp() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.up:
	default:
		close(h.up)
	}
}

// run looks at the consumer every healEvery, or when nudged, until ctx
// ends, and heals it when it is gone.
func (h *healer) run(ctx context.Context) {
	defer h.sweeps.Wait()
	t := time.NewTicker(healEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-h.nudge:
		}
		h.check(ctx)
	}
}

// check reads the consumer's ack floor, or heals it if it is gone. An
// error that does not say "gone" (a leader election, a disconnect) changes
// nothing: it is looked at again next round.
func (h *healer) check(ctx context.Context) {
	cctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	c, err := h.e.js.Consumer(cctx, h.stream, h.cfg.Durable)
	cancel()
	switch {
	case err == nil:
		info := c.CachedInfo()
		if !info.Created.Equal(h.instance) {
			// Made again by another replica (or an operator) since this
			// healer last looked, maybe in the stream made again: what
			// this replica holds is the old instance's (orphanHeld).
			h.orphanHeld()
		}
		before := h.floor.Swap(info.AckFloor.Stream)
		h.seen(ctx, info, before)
		h.markUp()
		h.recordFloor(ctx, info, false)
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		h.heal(ctx)
	case errors.Is(err, jetstream.ErrStreamNotFound) && h.streamGone(ctx):
		// Deleted (`nats stream rm`), and the consumer with it: a loss
		// like any, counted and answered 503 on /readyz until the
		// stream is made again (by an operator, or a dispatcher's
		// start: not here, where a partition change's procedure deletes
		// the old streams under running replicas). heal waits for it,
		// then recreates the consumer from the new stream's first event.
		h.e.log.Warn("the stream is gone (deleted?), and the sink's consumer with it; recreating the consumer once the stream is made again",
			zap.String("sink", h.sink), zap.String("stream", h.stream))
		h.heal(ctx)
	default:
		// Unknown: the pull's own retries go on meanwhile.
		h.markUp()
	}
}

// streamGone says the server answers that the healer's stream does not
// exist: read again on its own, so that one odd answer to the consumer's
// look (a cluster changing leaders) is not taken for a deletion.
func (h *healer) streamGone(ctx context.Context) bool {
	sctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	defer cancel()
	_, err := h.e.js.Stream(sctx, h.stream)
	return errors.Is(err, jetstream.ErrStreamNotFound)
}

// seen remembers the consumer as the server has it now: the config to
// recreate it with, and its lead mark, which the floor record carries
// too (a lead lost while no dispatcher runs stays the lead:
// topology.Leads). A consumer without the mark this healer knows was
// recreated by a replica that had not seen it (the first healer to
// create it wins, topology.RecreateConsumer): the mark goes back on,
// reading every subject (topology.RestoreLead). Not put back now (the
// broker unreachable), it is at the next look. before is the ack floor
// this healer knew before this read: with where the consumer started, a
// lower bound of what it may have passed over.
func (h *healer) seen(ctx context.Context, info *jetstream.ConsumerInfo, before uint64) {
	h.cfg = info.Config
	if _, marked := topology.Removing(info); marked {
		// Not recreated marked for removal: this replica runs the sink,
		// and clears such a mark itself (its fence's read, Reclaim), as
		// its bind did.
		h.cfg.Metadata = maps.Clone(h.cfg.Metadata)
		delete(h.cfg.Metadata, topology.RemovingMetadata)
	}
	if _, marked := h.cfg.Metadata[topology.LostUnreportedMetadata]; marked {
		// A loss a cut bind left for the next to report: a recreation
		// here is a loss of its own, reported here.
		h.cfg.Metadata = maps.Clone(h.cfg.Metadata)
		delete(h.cfg.Metadata, topology.LostUnreportedMetadata)
	}
	lead := topology.IsLead(info)
	if !lead && h.fromFloor && !h.lead && !info.Created.Equal(h.instance) {
		// A consumer this healer did not see made: its maker may have
		// missed a mark the bind that made the sink the lead recorded.
		// One read per consumer made, not one per look.
		h.learnLead(h.floorSaysLead(ctx))
	}
	h.instance = info.Created
	h.learnLead(lead)
	if lead || !h.lead || !h.fromFloor {
		return
	}
	// The hold's wait (up to 5 s) and its requests.
	rctx, cancel := context.WithTimeout(ctx, 2*brokerTimeout)
	c, prior, err := topology.RestoreLead(rctx, h.e.js, h.stream, h.cfg.Durable, time.Now().Add(leadHold))
	cancel()
	log := h.e.log.With(zap.String("sink", h.sink), zap.String("stream", h.stream), zap.String("consumer", h.cfg.Durable))
	if err != nil {
		if !h.restoring {
			log.Warn("the sink's consumer lacks the lead mark it had (recreated by a replica that had not seen it); not put back yet, trying again at each look",
				zap.Error(err))
		}
		h.restoring = true
		return
	}
	log.Warn("the sink's consumer lacked the lead mark it had (recreated by a replica that had not seen it); put back, reading every subject")
	h.cfg, h.restoring = c.CachedInfo().Config, false
	if !prior.Exists || h.sweep == nil {
		return
	}
	// Until now it read only its filter: what it passed over off it since
	// it was made (a stray the old lead left to this sink, when its
	// consumer read every subject) is below where it was widened, and
	// read by no one. Checked from where it started, or the floor this
	// healer knew, whichever is lower, as a bind that makes a sink the
	// lead checks its sink's backlog (sweep.go): verdicts a sink reaches
	// for an event once, so an overlap costs reads only. Not resumed by
	// a restart (no record): stopped before its end, what is left is
	// unchecked, as before this sweep.
	from := before + 1
	if start, err := topology.StartOf(info); err == nil && start > 0 && start < from {
		from = start
	}
	log.Warn("checking what the sink's consumer passed over off its filter while it lacked the mark",
		zap.Uint64("from_stream_sequence", from), zap.Uint64("widened_at_stream_sequence", prior.Delivered))
	s := leadSweep{partition: h.partition, from: from, prior: prior}
	h.sweeps.Go(func() { h.sweep(ctx, s) })
}

// learnLead keeps a lead mark once known (see lead).
func (h *healer) learnLead(lead bool) {
	if !lead {
		return
	}
	h.lead = true
	if h.rec != nil {
		h.rec.floor.Lead = true
	}
}

// floorSaysLead reads whether the sink's floor record on this stream
// says it leads: written by the bind that marked it, so it knows a mark
// this healer's looks (healEvery apart) may not have seen yet. Not
// found, or unreadable: no.
func (h *healer) floorSaysLead(ctx context.Context) bool {
	if h.rec == nil || h.rec.kv == nil {
		return false
	}
	rctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	defer cancel()
	f, found, err := topology.ReadFloor(rctx, h.rec.kv, h.sink, h.stream)
	return err == nil && found && f.Lead
}

// heal recreates the lost consumer, trying with backoff until it is back
// or ctx ends. It logs the loss once and the recovery once.
func (h *healer) heal(ctx context.Context) {
	var from uint64
	if h.fromFloor {
		from = h.floor.Load() + 1
	}
	log := h.e.log.With(zap.String("sink", h.sink), zap.String("stream", h.stream), zap.String("consumer", h.cfg.Durable))
	log.Warn("consumer lost; recreating it where it was (chapar_consumer_losses_total counts this)",
		zap.Uint64("from_stream_sequence", from))
	h.e.obs.ConsumerLost(h.sink)
	// What this replica holds was delivered by the instance gone: its
	// settlement would reach whatever is made under the name next.
	h.orphanHeld()
	// A pull hears "consumer deleted" before nats-server has removed the
	// consumer's directory; one recreated under the same name meanwhile
	// can lose its own to that removal (RecreateConsumer checks, and this
	// pause makes it rare).
	if sleep(ctx, healSettle, nil) != nil {
		return
	}
	wait := 250 * time.Millisecond
	unread := false // the stream's read failed (logged once)
	// first: no recreation tried yet (what it logs, it logs once).
	for first := true; ; {
		cfg := h.cfg
		if h.fromFloor && !h.lead {
			h.learnLead(h.floorSaysLead(ctx))
		}
		if h.lead {
			cfg.Metadata = maps.Clone(cfg.Metadata)
			if cfg.Metadata == nil {
				cfg.Metadata = map[string]string{}
			}
			cfg.Metadata[topology.LeadMetadata] = "true"
		}
		if h.fence != nil {
			if owner := h.fence(); owner != "" {
				cfg.Metadata = maps.Clone(cfg.Metadata)
				if cfg.Metadata == nil {
					cfg.Metadata = map[string]string{}
				}
				if owner != cfg.Metadata[topology.FenceMetadata] {
					// Another config owns the sink, and its filter is not
					// known here (its routes are not): the whole stream
					// is a superset of any, so the owner misses nothing
					// until its next bind writes its own.
					cfg.FilterSubject, cfg.FilterSubjects = "", nil
				}
				cfg.Metadata[topology.FenceMetadata] = owner
			}
		}
		at := from
		if h.fromFloor && h.rec != nil {
			// The floor is a position in the stream instance the sink
			// bound (Floor.StreamCreated). A stream deleted and made again
			// under its name meanwhile restarts its sequences at 1: the
			// floor would skip that many of its events. Every event of the
			// new instance was stored while the sink existed: all of it.
			// Unread (a slow or leaderless stream), it is not known
			// which: not recreated until it is (a recreation at the old
			// floor in a new stream skipped its events: TestHealerThat-
			// CannotReadTheStreamDoesNotRecreateAtTheOldFloor).
			sctx, cancel := context.WithTimeout(ctx, brokerTimeout)
			st, err := h.e.js.Stream(sctx, h.stream)
			cancel()
			if err != nil {
				if !unread {
					log.Warn("consumer not recreated yet: its stream cannot be read; trying again", zap.Error(err))
				}
				unread = true
				if sleep(ctx, wait, nil) != nil {
					return
				}
				wait = min(wait*2, 5*time.Second)
				continue
			}
			if created := st.CachedInfo().Created; !created.IsZero() && !h.rec.floor.StreamCreated.IsZero() && !created.Equal(h.rec.floor.StreamCreated) {
				if first {
					log.Warn("the events stream was deleted and made again since the sink bound; recreating its consumer from the new stream's first event",
						zap.Time("bound_stream_created", h.rec.floor.StreamCreated), zap.Time("stream_created", created))
				}
				at = 1
				cfg.Metadata = maps.Clone(cfg.Metadata)
				if cfg.Metadata == nil {
					cfg.Metadata = map[string]string{}
				}
				cfg.Metadata[topology.StartMetadata] = "1"
				h.rec.floor.StreamCreated, h.rec.floor.StartSeq, h.rec.written = created, 1, 0
			}
		}
		cctx, cancel := context.WithTimeout(ctx, brokerTimeout)
		c, created, err := topology.RecreateConsumer(cctx, h.e.js, h.stream, cfg, at)
		cancel()
		wasFirst := first
		first = false
		if err == nil {
			before := h.floor.Swap(c.CachedInfo().AckFloor.Stream)
			// Found made by another replica (created false): with the
			// mark this healer knows, or given it back (seen).
			h.seen(ctx, c.CachedInfo(), before)
			h.e.obs.ConsumerBack(h.sink)
			h.markUp()
			if created {
				log.Info("consumer recreated", zap.Uint64("from_stream_sequence", from))
			} else {
				log.Info("consumer found recreated by another dispatcher; keeping it")
			}
			return
		}
		if wasFirst {
			log.Warn("consumer not recreated yet; trying again", zap.Error(err))
		}
		if sleep(ctx, wait, nil) != nil {
			return
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// recordFloor writes the consumer's ack floor (info, just read) to its
// record, once the record names the stream instance this consumer is in.
// A consumer instance the record was not checked for (recreated by any
// replica since) is checked first (rebase). Safe without a record.
func (h *healer) recordFloor(ctx context.Context, info *jetstream.ConsumerInfo, now bool) {
	if h.rec == nil || (!info.Created.Equal(h.rec.instance) && !h.rebase(ctx, info)) {
		return
	}
	h.rec.write(ctx, info.AckFloor.Stream, now)
}

// rebase points the floor record at the stream instance the consumer
// instance in info is in, and says whether it could. Another replica may
// have recreated the consumer in the events stream made again (its
// healer saw the loss first, heal): a floor of that consumer written
// against the instance this record names is a position in a stream gone,
// which the next start would take for one in the new stream. Not known
// (the broker unreachable, or the stream made again between the reads):
// nothing is written, and the next look checks again.
func (h *healer) rebase(ctx context.Context, info *jetstream.ConsumerInfo) bool {
	rctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	defer cancel()
	st, err := h.e.js.Stream(rctx, h.stream)
	if err != nil {
		return false
	}
	// The consumer still there after the stream's read lives in the
	// stream read: a deleted stream takes its consumers with it, and a
	// consumer made again under the name is a new instance. No clocks
	// compared (a stream's and a consumer's creation can be stamped by
	// different servers).
	c, err := h.e.js.Consumer(rctx, h.stream, h.cfg.Durable)
	if err != nil || !c.CachedInfo().Created.Equal(info.Created) {
		return false
	}
	if created := st.CachedInfo().Created; !created.Equal(h.rec.floor.StreamCreated) {
		start, err := topology.StartOf(info)
		if err != nil {
			return false // its start not recorded yet: the next look
		}
		h.e.log.Warn("the sink's consumer was recreated in the events stream made again by another dispatcher; its floor is recorded in the new stream",
			zap.String("sink", h.sink), zap.String("stream", h.stream), zap.Time("bound_stream_created", h.rec.floor.StreamCreated),
			zap.Time("stream_created", created), zap.Uint64("start_stream_sequence", start))
		h.rec.floor.StreamCreated, h.rec.floor.StartSeq, h.rec.written = created, start, 0
	}
	h.rec.instance = info.Created
	return true
}

// floorEvery is how often at most a consumer's floor is written to the
// floors bucket, while it moves. A stale floor costs only events
// delivered again after a loss while no dispatcher runs (and a dispatcher
// that stops cleanly writes its last floor), so it is written no more
// often than the healer reads it: one small write per consumer each
// healEvery while it moves, none while it idles. Half of healEvery, so a
// look the pulls asked for just before a round does not push the write
// to the round after.
const floorEvery = healEvery / 2

// floorRecord is an events consumer's floor in the floors bucket
// (topology.Floor): the one thing a consumer lost while no dispatcher runs
// cannot tell the next start. Used by one goroutine at a time: its
// healer's, then the sink's as it stops (finalFloor).
type floorRecord struct {
	topo  topology.Topology
	js    jetstream.JetStream
	kv    jetstream.KeyValue
	sink  string
	floor topology.Floor // its stream, stream instance and start
	// instance is the consumer instance (its creation) floor's stream
	// instance was checked for: a floor is written only of that one
	// (healer.recordFloor).
	instance time.Time
	written  uint64 // the floor last written
	// writtenLead is the lead mark last written: a mark learnt since
	// (floor.Lead, see healer.lead) is written even if the floor has
	// not moved.
	writtenLead bool
	at          time.Time // when
	failing     bool      // the last write failed (logged once)
	log         *zap.Logger
}

// write stores floor if it moved since the last write, at most once per
// floorEvery unless now. Last writer wins among replicas: any floor once
// read is a lower bound of the consumer's position, so an older one only
// means more events delivered again. Safe on a nil record.
func (r *floorRecord) write(ctx context.Context, floor uint64, now bool) {
	if r == nil || (floor == r.written && r.floor.Lead == r.writtenLead) || (!now && time.Since(r.at) < floorEvery) {
		return
	}
	f := r.floor
	f.AckFloor, f.Updated = floor, time.Now().UTC()
	wctx, cancel := context.WithTimeout(ctx, brokerTimeout)
	defer cancel()
	var err error = jetstream.ErrBucketNotFound // not read at bind
	if r.kv != nil {
		err = topology.WriteFloor(wctx, r.kv, r.sink, f)
	}
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		// Deleted by hand, or unavailable at bind: made again, as the
		// next start would.
		var kv jetstream.KeyValue
		if kv, err = r.topo.EnsureFloors(wctx, r.js); err == nil {
			r.kv = kv
			err = topology.WriteFloor(wctx, r.kv, r.sink, f)
		}
	}
	if err != nil && ctx.Err() != nil {
		return // stopping: the final write (finalFloor) follows
	}
	if err != nil {
		if !r.failing {
			r.log.Warn("could not record the consumer's ack floor; trying again at the next look (a loss while no dispatcher runs would deliver more again)",
				zap.Uint64("floor", floor), zap.Error(err))
		}
		r.failing = true
		return
	}
	if r.failing {
		r.log.Info("the consumer's ack floor is recorded again", zap.Uint64("floor", floor))
	}
	r.written, r.writtenLead, r.at, r.failing = floor, f.Lead, time.Now(), false
}

// finalFloor reads the consumer's floor once more and writes it, as the
// sink stops (its healer done, its workers' acks sent): after a clean
// stop, a consumer lost before the next start is recreated where it was,
// nothing delivered again. Safe on a nil healer or record.
func (h *healer) finalFloor(ctx context.Context) {
	if h == nil || h.rec == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), brokerTimeout)
	defer cancel()
	c, err := h.e.js.Consumer(ctx, h.stream, h.cfg.Durable)
	if err != nil {
		return // gone or unreachable: the floor written last stands
	}
	h.recordFloor(ctx, c.CachedInfo(), true)
}
