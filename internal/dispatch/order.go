package dispatch

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Per-key order (a sink with `order`): events with the same key reach the
// vendor in the order they were published; while one is being retried the
// later ones of its key wait behind it (a barrier), and other keys go on.
//
//   - One replica at a time: the sink's events consumer is a pinned
//     priority group (topology.OrderGroup). Every replica pulls, the server
//     delivers to one, and moves to another when that one stops pulling
//     for PinnedTTL (orderPinnedTTL).
//   - In it, messages go into a lane per key, in the order they arrive
//     (stream order); a lane runs one message at a time, up to the sink's
//     concurrency lanes at once.
//   - A retry happens in place: the head stays unacked, kept alive, and is
//     tried again after Decide's delay; the lane's later messages wait.
//     Decide makes every verdict, as for any sink.
//   - A dead letter releases the barrier: the record is written (marked
//     released_barrier), the head acked, and the next message goes on.
//   - Gate shut (breaker open, Retry-After): lanes wait; nothing is handed
//     back, so nothing can come back out of order.
//   - Shutdown: every message held is handed back in stream order, and the
//     pin released so another replica takes over at once. Plainly, even a
//     head waiting on its backoff: a NAK delay would let the next replica
//     get the key's events this one never pulled before the delayed ones
//     fall due (TestOrderShutdownWithAHeadOnItsBackoffKeepsOrder). The next
//     replica tries the head at once; its backoff starts over.
//   - The pin is proven, not assumed: a replica starts an attempt only
//     while the server lately named its pin; a new holder starts only once
//     nothing delivered before is held elsewhere, puts what comes back to
//     it ahead of newer messages of the same keys, and works only those
//     until the ack floor says everything delivered before the pin moved
//     is settled (or ack_wait has passed); one that finds the pin gone
//     hands back what it held (order_lease.go).
//
// Events without a key (empty, or a template that fails on them) take the
// unordered path, with scheduled retries, as do replays and the sink's
// retry consumer.
//
// By job: this file has the orderer and its life (run, shutdown's hand-back);
// order_pull.go the pull loop that feeds it; order_lanes.go the lanes and
// their steps; order_lease.go the pin lease.

// orderPull is the ordered consumer's pull expiry: a live replica sends a
// pull request at least this often, which is what keeps it pinned.
const orderPull = 5 * time.Second

// orderPinnedTTL is how long the server waits for a pinned replica's next
// pull before pinning another. A replica that dies stopped sending
// in-progress acks at most when it stopped pulling, and its last pull was
// at most orderPull before that: so with a TTL of ack_wait + orderPull
// (and a second for the server's timers), every message it held is due
// for redelivery before a new replica is pinned, and JetStream delivers
// due redeliveries first, in stream order. No later event of a key can
// overtake one a dead replica held (TestOrderSurvivesAReplicaCrash).
func orderPinnedTTL(ackWait time.Duration) time.Duration {
	return ackWait + orderPull + time.Second
}

// pinHeader names the pin a message was delivered under.
const pinHeader = "Nats-Pin-Id"

// orderKeyFunc makes an event's order key ("" for none) from the config.
func orderKeyFunc(o *config.Order, log *zap.Logger) (func(*envelope.Event) string, error) {
	if o.Key == config.OrderByUser {
		// The partition key without its id fallback: events without a
		// user are not ordered, and a user's events share a partition.
		return func(ev *envelope.Event) string { return ev.UserKey() }, nil
	}
	t, err := o.Template()
	if err != nil {
		return nil, err
	}
	return func(ev *envelope.Event) string {
		var b strings.Builder
		if err := t.Execute(&b, ev); err != nil {
			// A field this event lacks (.Track.Name on an identify): it
			// has no key, so it is not ordered.
			log.Debug("order key template failed; delivering the event unordered",
				zap.String("event_id", clip(ev.ID)), zap.Error(err))
			return ""
		}
		return b.String()
	}, nil
}

// orderer runs one ordered consumer's lanes. Partitioned or not, there is
// one per consumer: order holds within what one consumer delivers.
type orderer struct {
	w    *sinkWorker
	key  func(*envelope.Event) string
	cons jetstream.Consumer

	mu      sync.Mutex
	lanes   map[string]*lane // keyed lanes holding messages
	all     map[*lane]bool   // every lane holding messages, keyed or not
	origins map[heldKey]bool // the messages held (order_remade.go)
	ready   []*lane
	signal  chan struct{} // a lane became ready

	// The pin lease (order_lease.go). pinID is the pin this replica's
	// messages came under last (their Nats-Pin-Id); proved is the pin the
	// server last named as this replica's, at provedAt (when it was
	// asked); kept is when every held message was last kept alive. Lanes
	// are worked only while all three agree and are recent (mayLocked).
	// pops counts settled messages, so a proof can tell whether the held
	// count moved while it was asked.
	pinID    string
	proved   string
	provedAt time.Time
	kept     time.Time
	pops     uint64
	fenced   int           // answers that found messages pending elsewhere since the last proof
	kick     chan struct{} // ask the lease for a proof now
	// A new pin's catch-up (order_lease.go). firstNew is the first
	// message delivered here for the first time under pinID (0: none yet):
	// every one delivered before the pin moved is older; pinSeen is when
	// the first message under pinID came, after the pin moved. catchTo
	// is, while anything was pending at the pin's first proof, the origin
	// of the last message the consumer had delivered then; 0 for none.
	// Until the ack floor reaches the older of the two, lanes whose head
	// is newer wait (catchUpToLocked); catchFrom is pinSeen then.
	firstNew  uint64
	pinSeen   time.Time
	catchTo   uint64
	catchFrom time.Time
	catchAsks int         // answers in this catch-up, for the next one's delay
	catchKick *time.Timer // asks again during a catch-up

	// epoch is the context of the lanes made since the lease was last
	// lost, cancelled (with their attempts) when it is lost; flight counts
	// the steps under way in it, so a hand-back can wait for them.
	work     context.Context // run's workCtx, which every epoch is cut from
	epoch    context.Context
	endEpoch context.CancelFunc
	flight   *sync.WaitGroup
}

func newOrderer(w *sinkWorker, key func(*envelope.Event) string, cons jetstream.Consumer) *orderer {
	return &orderer{w: w, key: key, cons: cons, lanes: map[string]*lane{}, all: map[*lane]bool{}, origins: map[heldKey]bool{},
		signal: make(chan struct{}, 1), kick: make(chan struct{}, 1), flight: &sync.WaitGroup{}}
}

// run pulls, feeds the lanes and works them with concurrency workers until
// ctx is done; in-flight attempts finish under workCtx. It then hands back
// what it holds, in stream order, and releases the pin.
func (o *orderer) run(ctx, workCtx context.Context, prefetch, concurrency int) {
	o.mu.Lock()
	o.work = workCtx
	o.epoch, o.endEpoch = context.WithCancel(workCtx)
	o.kept = time.Now() // holding nothing yet
	o.mu.Unlock()
	var wg sync.WaitGroup
	var leftover []jetstream.Msg
	wg.Go(func() { leftover = o.feed(ctx, workCtx, prefetch) })
	for range concurrency {
		wg.Go(func() {
			for l := o.next(ctx); l != nil; l = o.next(ctx) {
				o.step(ctx, workCtx, l)
			}
		})
	}
	stopLease := o.lease(ctx)
	wg.Wait()
	stopLease()
	o.mu.Lock()
	o.endEpoch()
	o.mu.Unlock()
	if o.handBackAll(ctx, leftover) {
		o.unpin(ctx)
	}
}

// handBackAll returns every held message and those that arrived during
// shutdown to JetStream, in stream order, so whoever is pinned next gets
// them in that order. The last hand-back waits for JetStream's answer:
// it reports whether all of them are in (JetStream takes a connection's
// acks in order), so the pin may go to another replica.
func (o *orderer) handBackAll(ctx context.Context, leftover []jetstream.Msg) (confirmed bool) {
	msgs := o.held()
	seq := func(m jetstream.Msg) uint64 {
		if meta, err := m.Metadata(); err == nil {
			return meta.Sequence.Stream
		}
		return 0
	}
	slices.SortStableFunc(leftover, func(a, b jetstream.Msg) int { return cmp.Compare(seq(a), seq(b)) })
	msgs = append(msgs, leftover...)
	if len(msgs) == 0 {
		return true
	}
	for _, m := range msgs[:len(msgs)-1] {
		_ = m.Nak()
	}
	last := msgs[len(msgs)-1]
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), brokerTimeout)
	defer cancel()
	_, err := o.w.js.Conn().RequestWithContext(rctx, last.Reply(), []byte("-NAK"))
	return err == nil
}

// parseRouteGuarded is parseRoute under guard: a panic dead-letters the
// message and reports it settled.
func (w *sinkWorker) parseRouteGuarded(ctx context.Context, j job) (d *delivery, ev *envelope.Event, targets []string, ok bool) {
	defer w.guard(ctx, j.msg)
	return w.parseRoute(ctx, j)
}

// resolveDeliverGuarded is the usual path's rest under guard: resolve,
// then deliver if the event is this sink's.
func (w *sinkWorker) resolveDeliverGuarded(ctx context.Context, d *delivery, ev *envelope.Event, targets []string) {
	defer w.guard(ctx, d.msg)
	if w.resolve(ctx, d, ev, targets) {
		w.deliver(ctx, d, ev)
	}
}

// checkGuarded is checkDestinations under guard; panicked says guard
// dead-lettered the message.
func (w *sinkWorker) checkGuarded(ctx context.Context, d *delivery, ev *envelope.Event, targets []string) (panicked bool, err error) {
	panicked = true
	defer w.guard(ctx, d.msg)
	return false, w.checkDestinations(ctx, d, ev, targets)
}

// attemptGuarded is attempt under guard, without the per-message
// in-progress acks (the orderer sends them, in stream order). panicked
// says guard dead-lettered the message.
func (w *sinkWorker) attemptGuarded(ctx context.Context, d *delivery, ev *envelope.Event) (v Verdict, derr, err error, panicked bool) {
	panicked = true
	defer w.guard(ctx, d.msg)
	v, derr, err = w.attempt(ctx, d, ev, false)
	return v, derr, err, false
}

// runOrdered is run for a sink with order: its events consumer goes
// through the lanes; its retry consumer (replays, and retries of events
// without a key) through a few workers of the usual path.
func (b boundSink) runOrdered(ctx, workCtx context.Context) {
	jobs := make(chan job)
	var feeders, workers sync.WaitGroup
	n := max(b.concurrency/4, 1)
	var ks keepers // closed after the workers and held messages (run's)
	defer ks.closeAll()
	rk := ks.add(b.cons.Retries)
	feeders.Go(func() { consume(ctx, b.cons.Retries, rk, true, n, b.w.gate, jobs, b.w.log) })
	for range n {
		workers.Go(func() {
			for j := range jobs {
				b.w.handle(workCtx, j)
			}
		})
	}
	// One orderer per partition: a key never leaves its partition, so its
	// order is one consumer's. The sink's gate keeps the requests in
	// flight within concurrency across them.
	var orderers sync.WaitGroup
	pull := partitionPrefetch(heldPrefetch(b.concurrency), len(b.cons.Events))
	for _, c := range b.cons.Events {
		orderers.Go(func() { newOrderer(b.w, b.orderKey, c).run(ctx, workCtx, pull, b.concurrency) })
	}
	orderers.Wait()
	feeders.Wait()
	close(jobs)
	workers.Wait()
	b.w.held.Wait()
}
