package dispatch

import (
	"context"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Keyed batching, for a sink whose requests each take one key's events
// (sinks.KeyedBatchSink: the Metrix gateway takes one user per request).
// Cutting the stream into batches, as for Chabok, would give such a sink
// about one event per request once there are more users than a batch
// holds, and would put a user's events in batches sent side by side, in
// any order. Instead the collector keeps a group per key:
//
//   - The window: a key's events wait in its group until it has max_items,
//     or max_wait has passed since it began filling, or the batcher holds
//     all it may (hold, within the consumer's max_ack_pending): then the
//     group that has waited longest leaves, however full. In a backlog a
//     request therefore carries about hold ÷ keys events.
//   - A window shared: replicas on one sink share its consumer's
//     max_ack_pending, so none may reach its own hold. When events are
//     pending behind the last the consumer handed over (NumPending > 0)
//     yet none has come for starveAfter, the server is withholding them
//     (max_ack_pending reached, by this replica or others): the window is
//     as full as it gets, and groups leave as if it were full. (Before,
//     two replicas on a backlog sent nothing until max_wait.) What a
//     consumer said it had pending is believed for max_wait after it said
//     so: events removed from under it (a purge, max_age) never come, and
//     the rule would send each event as it arrives until that partition
//     hands over another. Not less: a replica whose freed room the server
//     gives to another hears nothing meanwhile, yet holds its share of
//     the window, and past max_wait its groups leave anyway.
//   - A backlog's end: once an event came with at least a window's worth
//     pending behind it (NumPending ≥ hold: a backlog, not live traffic
//     the consumer keeps up with), the first event after it with nothing
//     pending behind it, when the last from every other partition had
//     nothing either, says the backlog is drained. What the window holds
//     would then grow only by what is published from now on, so it
//     leaves as if the window were full, for max_wait at most or until
//     nothing is held: events arriving meanwhile leave as they come.
//     (Without it the last window of every backlog waited out max_wait: a
//     second of a 2.9 s drain of 50,000 events in cmd/bench's batched
//     Metrix run.) A passed ticket's event counts too: a backlog may end
//     in an event that is not the sink's.
//   - Order within a key: the workers parse in parallel, so events are
//     admitted by ticket, in the order the pull handed them over (stream
//     order), whatever order their parsing ends in.
//   - Order across batches: a key has at most one batch with a sender; its
//     next events gather meanwhile and leave once that batch is settled.
//   - Order across a retry: a batch's events to retry are retried in place
//     (kept alive, after Decide's delay), the key's later events behind
//     them; so is a batch the gate turns away. A dead letter, as in an
//     ordered lane, releases the key's next events.
//
// Order holds among what one dispatcher holds: with several replicas
// pulling one consumer, or across a shutdown's hand-back, a user's events
// may reach different replicas (per-key order across replicas is the
// `order` option's pinned consumer, which does not batch).

// keyGroup is one key's events waiting in the collector.
type keyGroup struct {
	key   string
	items []heldItem
	since time.Time // when its window began: it became idle with events
	busy  bool      // a batch of it is with a sender
	gen   uint64    // bumped on each emission; stale queue entries differ
}

type queuedGroup struct {
	g   *keyGroup
	gen uint64
}

// keyedBatch is one key's batch, for a sender.
type keyedBatch struct {
	g     *keyGroup
	items []heldItem
	// retry is what of it is to be sent again in place (parsed): a
	// batch waits for its retry out of its sender (parked), which takes
	// other keys' batches meanwhile.
	retry []batchItem
}

// startKeyed is start for a keyed sink.
func (b *batcher) startKeyed(ctx context.Context, senders int) (stop func()) {
	// Buffered: a sender back for its next batch takes one the collector
	// readied while it was out, rather than waiting, runnable, for the
	// collector to be scheduled (issue 20: 1.98 s of the collector's
	// scheduling delay in a 2.9 s batched Metrix run; 0.85 s buffered).
	batches := make(chan keyedBatch, senders)
	// A sender that settled its batch goes back for the next one without
	// waiting for the collector to take the news.
	done := make(chan keyedBatch, senders)
	again := make(chan keyedBatch)
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		b.collectKeyed(batches, done, again)
		close(batches)
	}()
	var send sync.WaitGroup
	for range senders {
		send.Go(func() {
			for kb := range batches {
				items := kb.retry
				if items == nil {
					items = b.reparse(ctx, kb.items)
				}
				retry, wait, wake := b.send(ctx, items, true)
				if len(retry) == 0 {
					done <- kb
					continue
				}
				// The wait for the retry is not the sender's: a key
				// failing again and again would hold it, and with as
				// many such keys as senders every other key would wait
				// for their max_elapsed. The collector counts the batch
				// out until it is settled (done).
				go func() {
					if b.waitInPlace(ctx, retry, wait, wake) {
						kb.retry = retry
						again <- kb
					} else {
						done <- kb
					}
				}()
			}
		})
	}
	return func() {
		close(b.in)
		<-collected
		send.Wait()
	}
}

// keyCollector is the collector's state, the collector goroutine's alone.
type keyCollector struct {
	b       *batcher
	groups  map[string]*keyGroup
	idle    []queuedGroup // groups with events and no batch out, by since
	full    []queuedGroup // groups with max_items events and no batch out
	early   map[uint64]batchItem
	next    uint64 // the next ticket to admit
	held    int    // events in groups and in batches out
	out     int    // batches with senders
	closing bool
	// lagged says an event came with a backlog behind it since one last
	// ended; drainUntil is when that end's drain stops (note).
	lagged     bool
	drainUntil time.Time
	lastIn     time.Time // when it last took an event, or last did not want one
	// behind marks the partitions (topology.SplitOrigin's) whose last
	// event had more pending behind it, said at behindAt; nBehind counts
	// them, parts bounds the partitions heard from. behindUntil is when
	// the newest such word goes stale (believedBehind).
	behind      [1 << 8]bool
	behindAt    [1 << 8]time.Time
	nBehind     int
	parts       int
	behindUntil time.Time
}

// collectKeyed runs until in is closed and everything held is settled.
func (b *batcher) collectKeyed(out chan<- keyedBatch, done, again <-chan keyedBatch) {
	var due []keyedBatch // batches whose in-place retry is due, first come first
	c := &keyCollector{b: b, groups: map[string]*keyGroup{}, early: map[uint64]batchItem{}}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		now := time.Now()
		if c.closing && c.held == 0 && c.out == 0 {
			return
		}
		in := b.in
		if c.closing || c.held >= b.hold {
			in = nil
			// Not waiting for events: none is late (pick's starveAfter
			// counts from when the collector takes them again).
			c.lastIn = now
		}
		var send chan<- keyedBatch
		var kb keyedBatch
		if len(due) > 0 {
			send, kb = out, due[0]
		} else if g, wait := c.pick(now); g != nil {
			send, kb = out, keyedBatch{g: g, items: g.items[:min(len(g.items), b.maxItems)]}
		} else if wait > 0 {
			timer.Reset(wait)
		}
		select {
		case it, ok := <-in:
			if !ok {
				c.closing = true
				continue
			}
			c.lastIn = now
			c.admit(it, now)
		case send <- kb:
			if kb.retry != nil { // still counted out (c.out)
				due = due[1:]
				continue
			}
			g := kb.g
			g.items = append([]heldItem(nil), g.items[len(kb.items):]...)
			g.busy = true
			g.gen++
			c.out++
		case kb := <-again:
			due = append(due, kb)
		case kb := <-done:
			c.out--
			c.held -= len(kb.items)
			if c.held == 0 {
				c.drainUntil = time.Time{} // the backlog's end has left
			}
			g := kb.g
			g.busy = false
			c.queue(g, time.Now())
		case <-timer.C:
		}
	}
}

// admit takes an item (or a ticket's skip) and moves every item whose
// turn has come into its group.
func (c *keyCollector) admit(it batchItem, now time.Time) {
	c.early[it.ticket] = it
	for {
		it, ok := c.early[c.next]
		if !ok {
			return
		}
		delete(c.early, c.next)
		c.next++
		if it.d == nil { // the ticket's message was settled without a batch
			if it.passed != nil {
				c.note(it.passed, now)
			}
			continue
		}
		key := c.b.key(it.ev)
		// A group holds the message alone, reduced to what its batch,
		// settlement and dead letter read (held.go): the parsed event
		// weighs about three times the message, the delivery and the
		// client's message with its header map about as much again, and
		// both are made again from it when its batch leaves (reparse).
		if k, ok := it.d.msg.(*kept); ok {
			k.hold(c.b.w.js.Conn())
		}
		h := heldItem{msg: it.d.msg, retry: it.d.retry}
		g := c.groups[key]
		if g == nil {
			g = &keyGroup{key: key}
			c.groups[key] = g
		}
		g.items = append(g.items, h)
		c.held++
		c.note(it.d, now)
		if !g.busy {
			if len(g.items) == 1 {
				g.since = now
				c.idle = append(c.idle, queuedGroup{g, g.gen})
			}
			if len(g.items) == c.b.maxItems {
				c.full = append(c.full, queuedGroup{g, g.gen})
			}
		}
	}
}

// note takes what d's consumer had pending behind it, and starts a
// drain when a backlog has ended (the window, above): for max_wait at
// most, as the events after it may begin another. A retry says nothing
// of the events consumers.
func (c *keyCollector) note(d *delivery, now time.Time) {
	if d.retry {
		return
	}
	if d.pending >= uint64(c.b.hold) {
		c.lagged = true
	}
	p, _ := topology.SplitOrigin(d.origin)
	c.parts = max(c.parts, p+1)
	behind := d.pending > 0
	was := c.behind[p]
	c.behind[p] = behind
	switch {
	case behind:
		c.behindAt[p] = now
		c.behindUntil = now.Add(c.b.maxWait) // the newest word
		if !was {
			c.nBehind++
		}
	case was:
		c.nBehind--
		// The newest word of those still behind: another partition's
		// word, stale or not, is its own (a purged partition stays
		// behind until it speaks again).
		c.behindUntil = time.Time{}
		for q := range c.parts {
			if c.behind[q] && c.behindAt[q].After(c.behindUntil) {
				c.behindUntil = c.behindAt[q]
			}
		}
		if !c.behindUntil.IsZero() {
			c.behindUntil = c.behindUntil.Add(c.b.maxWait)
		}
	}
	if c.lagged && !c.believedBehind(now) {
		c.lagged = false
		c.drainUntil = now.Add(c.b.maxWait)
	}
}

// believedBehind says whether a partition's consumer said, within
// max_wait, that it had more pending than it has handed over: a word
// older than that is stale (events purged from under it never come).
func (c *keyCollector) believedBehind(now time.Time) bool {
	return c.nBehind > 0 && now.Before(c.behindUntil)
}

// queue puts a group whose batch was settled back in line, or forgets it.
func (c *keyCollector) queue(g *keyGroup, now time.Time) {
	switch {
	case len(g.items) == 0:
		delete(c.groups, g.key)
	default:
		// Its events waited while the batch before was out: the window
		// starts now, which keeps idle in order of since.
		g.since = now
		c.idle = append(c.idle, queuedGroup{g, g.gen})
		if len(g.items) >= c.b.maxItems {
			c.full = append(c.full, queuedGroup{g, g.gen})
		}
	}
}

// pick is the group to send next, or how long until one is due.
func (c *keyCollector) pick(now time.Time) (*keyGroup, time.Duration) {
	stale := func(q queuedGroup) bool { return q.g.busy || q.g.gen != q.gen || len(q.g.items) == 0 }
	for len(c.full) > 0 && stale(c.full[0]) {
		c.full = c.full[1:]
	}
	if len(c.full) > 0 {
		return c.full[0].g, 0
	}
	for len(c.idle) > 0 && stale(c.idle[0]) {
		c.idle = c.idle[1:]
	}
	if len(c.idle) == 0 {
		return nil, 0
	}
	g := c.idle[0].g
	due := g.since.Add(c.b.maxWait)
	if c.closing || c.held >= c.b.hold || now.Before(c.drainUntil) || !now.Before(due) {
		return g, 0
	}
	if c.believedBehind(now) { // more pending on the server (the window, above)
		starved := c.lastIn.Add(c.b.starveAfter())
		if !now.Before(starved) {
			return g, 0
		}
		if starved.Before(due) {
			due = starved
		}
	}
	return nil, due.Sub(now)
}

// starveAfter is how long a keyed collector waits for events it knows are
// pending before it takes the window for full (shared with other
// replicas): well above a pull's round trip on a loaded machine, well
// below max_wait, which is what it would wait otherwise.
func (b *batcher) starveAfter() time.Duration {
	return min(b.maxWait/4, 20*time.Millisecond)
}

// heldItem is an event in a key's group: its message, held (held.go),
// and whether it came from the retry consumer. Its delivery is made again
// from them when its batch leaves (reparse), as the worker made it
// (newDelivery): nothing changes a delivery between the two.
type heldItem struct {
	msg   jetstream.Msg
	retry bool
}

// reparse makes again the deliveries and events of what a group held as
// messages alone (admit), for a sender: the collector counts kb.items when
// it is settled. Each was parsed once already, so this fails only if
// memory did.
func (b *batcher) reparse(ctx context.Context, items []heldItem) []batchItem {
	out := make([]batchItem, 0, len(items))
	for _, h := range items {
		meta, err := h.msg.Metadata()
		if err != nil {
			b.w.log.Error("held message without JetStream metadata; terminating it", zap.String("sink", b.w.name), zap.Error(err))
			_ = h.msg.Term()
			continue
		}
		d := newDelivery(h.msg, meta, h.retry)
		ev, err := envelope.ParseMessage(h.msg.Headers(), h.msg.Data(), b.w.maxBytes)
		if err != nil {
			b.w.deadLetter(ctx, d, b.w.record(d, nil, dlq.NoSink, outcome.InvalidEnvelope, err))
			continue
		}
		out = append(out, batchItem{d: d, ev: ev})
	}
	return out
}

// waitInPlace waits (kept alive) until what is to be retried in place may
// be sent again, or the gate's change (wake), and says whether it may: on
// shutdown it is handed back in order, for whoever pulls next.
func (b *batcher) waitInPlace(ctx context.Context, again []batchItem, wait time.Duration, wake <-chan struct{}) bool {
	msgs := make([]jetstream.Msg, len(again))
	for i, it := range again {
		msgs[i] = it.d.msg
	}
	stop := keepAlive(b.w.ackWait/3, msgs...)
	err := sleep(ctx, wait, wake)
	stop()
	if err != nil {
		for _, it := range again {
			b.w.handBack(it.d, 0)
		}
		return false
	}
	b.w.log.Debug("retrying a batch in place", zap.String("sink", b.w.name), zap.Int("events", len(again)))
	return true
}
