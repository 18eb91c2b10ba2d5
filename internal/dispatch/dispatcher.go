// Package dispatch moves events from JetStream to vendors. Each sink has
// its own durable consumers on the events stream and on its retries, and
// its own worker pool, gate (breaker, Retry-After, ramp) and retry policy:
// a slow or dead vendor holds back only its own queue.
//
// Reading order: dispatcher.go wires it up, consume.go pulls, worker.go is
// the path of one message, decide.go the verdict, settle.go its effect.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dataschema"
	"github.com/chapar-dev/chapar/internal/deliveries"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Options are what a Dispatcher needs beyond its config.
type Options struct {
	Observer Observer // nil: a Tally
	Logger   *zap.Logger
	// Ready, if set, is called once every consumer is bound.
	Ready func()
	// Wrap, if set, wraps each sink built from the config: tests inject
	// faults with it.
	Wrap func(name string, s sinks.Sink) sinks.Sink
	// Tracer makes a span per delivery attempt (nil: none; see
	// internal/tracing for the one the OTEL_* variables configure).
	Tracer trace.TracerProvider
}

// Dispatcher runs every sink's consumers and worker pool.
type Dispatcher struct {
	cfg   *config.Config
	sinks map[string]sinks.Sink
	// built are the sinks before Options.Wrap: an Attacher is attached
	// whatever wraps it.
	built map[string]sinks.Sink
	o     Options
	// id names this process in the deployment: its presence record and
	// its claims in the pause records.
	id string
	*engine
}

// engine is what every sink's workers share.
type engine struct {
	js       jetstream.JetStream
	topo     topology.Topology
	routes   *Routes
	dlq      *dlq.Writer
	obs      Observer
	log      *zap.Logger
	tracer   trace.Tracer
	ackWait  time.Duration
	maxBytes int
	// schemas check the data of the types the config has a schema for.
	schemas *dataschema.Set
	// filterLog bounds the log lines of filters that fail (worker.go's
	// filterFailed), over every sink of the process.
	filterLog *rate.Limiter

	// starts says which sink covers which events, by stream position
	// (starts.go).
	starts *sinkStarts
	// recorder keeps what became of each delivery (record.go); nil with
	// streams.record_deliveries off.
	recorder recorder
}

// recorder is where delivery records go: a deliveries.Writer.
type recorder interface {
	Record(deliveries.Record)
}

// filterLogEvery is the least time between two log lines of a route
// filter that failed.
const filterLogEvery = 10 * time.Second

// New builds the dispatcher a config describes: its sinks through the
// vendor registry (each sink is described once, in cfg.Sinks), its routes,
// policies and JetStream layout. `dispatcher run`, the demo and the tests
// all build it here. It fails on what the config cannot work with (a
// sink's settings, say), before anything connects; Run starts it.
func New(cfg *config.Config, o Options) (*Dispatcher, error) {
	built, err := sinks.Build(cfg.Sinks)
	if err != nil {
		return nil, err
	}
	wrapped := built
	if o.Wrap != nil {
		wrapped = make(map[string]sinks.Sink, len(built))
		for name, s := range built {
			wrapped[name] = o.Wrap(name, s)
		}
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Observer == nil {
		o.Observer = NewTally()
	}
	if o.Tracer == nil {
		o.Tracer = noop.NewTracerProvider()
	}
	schemas, err := dataschema.Compile(cfg.DataSchemas)
	if err != nil {
		return nil, err
	}
	routes, err := NewRoutes(cfg.Routes)
	if err != nil {
		return nil, err
	}
	topo := topology.New(cfg.Streams)
	e := &engine{
		topo: topo, routes: routes, obs: o.Observer, log: o.Logger,
		tracer:  o.Tracer.Tracer("github.com/chapar-dev/chapar/internal/dispatch"),
		ackWait: cfg.Dispatcher.AckWait, maxBytes: topo.MaxEnvelopeBytes(),
		starts: newSinkStarts(), schemas: schemas, filterLog: rate.NewLimiter(rate.Every(filterLogEvery), 1),
	}
	return &Dispatcher{cfg: cfg, sinks: wrapped, built: built, o: o, id: uuid.NewString(), engine: e}, nil
}

// Run consumes until ctx is done, then drains: it stops pulling, hands
// back what it prefetched but did not start, and lets in-flight deliveries
// finish for up to ShutdownGrace before handing them back too. Nothing is
// acked that the vendor did not accept.
func (d *Dispatcher) Run(ctx context.Context, js jetstream.JetStream) error {
	cfg := d.cfg.Dispatcher
	d.js, d.dlq = js, dlq.NewWriter(js, d.topo)
	if d.cfg.Streams.RecordDeliveries {
		d.recorder = deliveries.NewWriter(js.Conn(), d.topo.Prefix())
	}
	names := make([]string, len(d.cfg.Sinks))
	for i, sc := range d.cfg.Sinks {
		names[i] = sc.Name
	}
	// Deleted last, once the work is over (the defers below run first).
	pres := newPresence(d.id, names, d.topo, js, d.log)
	defer pres.remove()
	workers, board, err := d.bind(ctx, pres)
	if err != nil {
		return err
	}
	fences := make(map[string]string, len(workers))
	for _, b := range workers {
		fences[b.w.name] = b.w.fence.mine
	}
	pres.bound(ctx, fences)

	// workCtx outlives ctx by the grace period, for in-flight work.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	// The deployment's pauses are read before the first pull, and watched
	// (and written) while work goes on.
	var shared sync.WaitGroup
	defer shared.Wait()
	defer cancelWork()
	pausesRead := make(chan struct{})
	shared.Go(func() { board.run(workCtx, pausesRead) })
	shared.Go(func() { pres.run(workCtx) })
	select {
	case <-pausesRead:
	case <-ctx.Done():
		return nil
	}

	d.log.Info("dispatcher consuming", zap.Int("sinks", len(workers)), zap.String("events", d.topo.EventsSubjects()), zap.Int("partitions", d.topo.Partitions()))
	if d.o.Ready != nil {
		d.o.Ready()
	}
	graceStarted := make(chan struct{})
	stopGrace := context.AfterFunc(ctx, func() {
		defer close(graceStarted)
		d.log.Info("draining", zap.Duration("grace", cfg.ShutdownGrace))
		time.AfterFunc(cfg.ShutdownGrace, cancelWork)
	})
	// Run returns after its "draining" line is written, not while it is
	// (a caller reading the log once Run returns raced with it).
	defer func() {
		if !stopGrace() {
			<-graceStarted
		}
	}()

	if len(workers) == 0 {
		// No sinks yet (a deployment started before its sinks are set):
		// it serves, stores events and delivers none until it is stopped,
		// rather than returning at once.
		<-ctx.Done()
		return nil
	}
	var wg sync.WaitGroup
	for _, b := range workers {
		wg.Go(func() { b.run(ctx, workCtx) })
		if len(b.sweeps) > 0 {
			wg.Go(func() {
				for _, s := range b.sweeps {
					if b.w.sweep(ctx, js.Conn(), s) && b.floors != nil {
						// Done: no bind resumes it. Not fatal: one that
						// does costs reads, and reaches the same verdicts.
						dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), brokerTimeout)
						if err := d.topo.DoneSweep(dctx, b.floors, b.w.name, s.partition); err != nil {
							d.log.Warn("the lead's sweep is done but its record could not be deleted; the next bind sweeps again",
								zap.String("sink", b.w.name), zap.Error(err))
						}
						cancel()
					}
				}
			})
		}
	}
	wg.Wait()
	return nil
}

// boundSink is a sink's worker with its consumers.
type boundSink struct {
	w           *sinkWorker
	cons        topology.SinkConsumers
	concurrency int
	// maxAckPending is the sink's: the pull keeps at most half of it.
	maxAckPending int
	// orderKey, for a sink with order, is the event's key (order.go).
	orderKey func(*envelope.Event) string
	// sweeps, for a sink this bind made the lead in place of one the
	// config dropped, are what it checks of the old lead's backlog
	// (sweep.go).
	sweeps []leadSweep
	// floors is the floors bucket, where a pending sweep is recorded
	// (topology.PendingSweep); nil if it could not be read at bind.
	floors jetstream.KeyValue
}

// run pulls from all of the sink's consumers (one per partition, and its
// retries) into one worker pool: concurrency, the gate, the pacer and the
// breaker are per sink, whatever the partitions, since the vendor sees one
// client.
func (b boundSink) run(ctx, workCtx context.Context) {
	// The fence settles skips until the workers are done, then hands back
	// what is still queued.
	fenceCtx, stopFence := context.WithCancel(workCtx)
	var fence sync.WaitGroup
	fence.Go(func() { b.w.fence.run(fenceCtx) })
	defer fence.Wait()
	defer stopFence()
	// The events consumers' floors are written once more as the sink
	// stops, after the healers are done (deferred first, run last).
	defer func() {
		for _, c := range b.cons.Events {
			healerOf(c).finalFloor(ctx)
		}
	}()
	// Each consumer's healer, for as long as the sink pulls: the ordered
	// path's consumers heal too (order.go need not know; its pulls resume
	// once the consumer is back).
	var healers sync.WaitGroup
	defer healers.Wait()
	for _, c := range append(slices.Clone(b.cons.Events), b.cons.Retries) {
		if h := healerOf(c); h != nil {
			healers.Go(func() { h.run(ctx) })
		}
	}
	// A paused sink's backlog is dead-lettered past the pause's reach,
	// not dropped by max_age (rescue.go). A held goroutine: held.Wait,
	// below or in runOrdered, waits for it and for what it holds.
	b.w.held.Go(func() { b.rescue(ctx) })
	if b.orderKey != nil {
		b.runOrdered(ctx, workCtx)
		return
	}
	jobs := make(chan job)
	var feeders, workers sync.WaitGroup
	pull, stopBatching := partitionPrefetch(prefetch(b.concurrency, b.maxAckPending), len(b.cons.Events)), func() {}
	if bt := b.w.batch; bt != nil {
		pull, stopBatching = bt.prefetch(pull, partitionPrefetch(heldPrefetch(b.concurrency), len(b.cons.Events))), bt.start(workCtx, b.concurrency)
	}
	pulled := jobs
	var sequencer sync.WaitGroup
	if bt := b.w.batch; bt != nil && bt.key != nil {
		// Tickets in the order the pulls hand messages over: a keyed
		// batcher admits its events in that order (batch_keyed.go).
		pulled = make(chan job)
		sequencer.Go(func() {
			var ticket uint64
			for j := range pulled {
				j.ticket = ticket
				ticket++
				jobs <- j
			}
		})
	}
	// The keepers outlive the pulls: what the workers and the batcher
	// hold when the pulls stop is delivered within shutdown_grace, and
	// stays this process's until then (keeper.close).
	var ks keepers
	defer ks.closeAll()
	for _, c := range b.cons.Events {
		k := ks.add(c)
		feeders.Go(func() { consume(ctx, c, k, false, pull, b.w.gate, pulled, b.w.log) })
	}
	rk := ks.add(b.cons.Retries)
	feeders.Go(func() { consume(ctx, b.cons.Retries, rk, true, max(b.concurrency/4, 1), b.w.gate, pulled, b.w.log) })
	for range b.concurrency {
		workers.Go(func() {
			for j := range jobs {
				b.w.handle(workCtx, j)
			}
		})
	}
	feeders.Wait()
	if pulled != jobs {
		close(pulled)
		sequencer.Wait()
	}
	close(jobs)
	workers.Wait()
	stopBatching()
	b.w.held.Wait() // held messages are handed back once workCtx ends
}

// prefetch is how many messages a sink keeps pulled ahead of its workers:
// four per worker up to 512, then two per worker (at most 4,096), and at
// least 512 (or half the sink's max_ack_pending, if that is less), so the
// workers never wait on a pull round trip and the server serves few pull
// requests. However slow the vendor, a buffered message does not outlive
// ack_wait: each is kept alive from the moment the pull hands it over
// (keeper), and the pull's own buffer is taken over after a quarter of
// ack_wait of waiting for workers (feed). Half of max_ack_pending leaves
// the other half to other replicas sharing the consumer.
//
// Measured (cmd/bench, backlog, 16 workers): a prefetch of 16 left
// nats-server at 2.2× a lean consumer's CPU per event, 64 at 1.5×; 512
// against 64 in the same run gave 1.16× the throughput at 16 workers and
// 1.17× at 64, with 0.78× and 0.83× of nats-server's CPU per event and
// 0.88× and 0.83× of the dispatcher's (docs/benchmarks.md). A lean
// consumer's Consume pulls 500 ahead. Past 128 workers, two per worker:
// the pull asks for more at half, so half of 2×workers is still a message
// per worker queued, and at 256 workers (cmd/bench slow) the 512 more of
// four per worker were 0.4 MiB of live heap and about 1 MiB of peak RSS.
//
// What a replica prefetched is its own until it settles it. With several
// replicas over a finite backlog and a slow vendor, the one that drew the
// last full pull works through it alone while the others idle (3
// replicas of 4 workers at 20 ms, 2,000 events: at the default
// max_ack_pending, a prefetch of 500, two replicas idle for the last
// 2.0-2.4 s of 5.4 s; at 200, 0.1-0.4 s of 4.1 s:
// TestPrefetchSharedByThreeReplicas), and a replica that crashes leaves
// its prefetch to ack_wait. A replica joining while the others hold all of
// max_ack_pending does not starve: nats-server serves waiting pulls round
// robin as acks free room. Not capped further, by choice: a cap at
// max_ack_pending / replicas leaves two thirds of that tail and needs the
// count of replicas; a cap of four per worker ends it but gives back what
// the floor of 512 gives a fast vendor (1.16x, above). What would end it
// is a prefetch sized by the workers' rate, not by a count; until then
// max_ack_pending is the knob for a slow vendor shared by several
// replicas (docs/scaling.md, "Replicas and the pull-ahead").
func prefetch(concurrency, maxAckPending int) int {
	perWorker := max(min(concurrency*4, 512), concurrency*2)
	return min(max(perWorker, min(512, maxAckPending/2), 32), 4096)
}

// heldPrefetch is the pull-ahead of a sink whose events wait in Chapar
// beyond the pull (a keyed batcher's groups, an ordered sink's lanes):
// four per worker, at least 32. What they hold themselves counts against
// max_ack_pending, so the pull keeps little.
func heldPrefetch(concurrency int) int { return min(max(concurrency*4, 32), 4096) }

// partitionPrefetch shares a sink's prefetch among its partitions' pulls,
// so partitions do not multiply how many messages wait for a worker; each
// pull keeps at least 16, enough to stay ahead of a round trip. (Each
// partition's pull has its own keeper and its own quarter of ack_wait.)
func partitionPrefetch(total, partitions int) int {
	if partitions <= 1 {
		return total
	}
	return max((total+partitions-1)/partitions, 16)
}

// bind creates the streams and every sink's consumers. On a cluster that
// is still forming (no JetStream leader yet, a stream without quorum) it
// waits with backoff, not ready meanwhile; it gives up only on errors
// waiting cannot fix.
func (d *Dispatcher) bind(ctx context.Context, pres *presence) ([]boundSink, *pauseBoard, error) {
	var out []boundSink
	var board *pauseBoard
	// What a sink this bind makes the lead (none of the config's sinks
	// was) passed over: read before its consumer is widened, once, since
	// a bind tried again finds it marked.
	sweeps := map[string][]leadSweep{}
	// The losses reported, by consumer instance: a try cut after it
	// reported one and before it cleared the consumer's mark leaves it
	// for the next to report again (topology.LostUnreportedMetadata).
	reported := map[string]bool{}
	me := d.id
	began := time.Now()
	retryable := func(err error) error { return retryableSince(err, time.Since(began)) }
	op := func() error {
		out = out[:0]
		actx, cancel := context.WithTimeout(ctx, bindTryTimeout)
		defer cancel()
		if err := d.topo.Ensure(actx, d.js); err != nil {
			return retryable(err)
		}
		// Before the consumers are bound: a removal under way sees this
		// replica, or the mark this bind clears (topology.Retire). Not
		// fatal (presence.write logs it).
		pres.write(actx)
		board = newPauseBoard(d.topo, d.js, d.log)
		// The floors are in bind's path, unlike the pauses: a consumer
		// found missing cannot be created right without them. But only
		// then: a bucket that cannot be made, updated or written (sealed,
		// without quorum) must not keep a dispatcher whose consumers all
		// exist from delivering; it is read if it can be, and a sink
		// whose consumer is missing waits for it (EnsureSink).
		floors, floorsErr := d.topo.EnsureFloors(actx, d.js)
		if floorsErr != nil {
			var lerr error
			if floors, lerr = d.js.KeyValue(actx, d.topo.FloorsBucket()); lerr != nil {
				floors = nil
			}
			d.log.Warn("the floors bucket cannot be made or updated; binding without writing floors "+
				"(a consumer lost while no dispatcher runs is recreated from the last floor recorded, or waits for the bucket)",
				zap.Bool("readable", floors != nil), zap.Error(floorsErr))
		}
		names := make([]string, len(d.cfg.Sinks))
		for i, sc := range d.cfg.Sinks {
			names[i] = sc.Name
		}
		// Which sinks lead is read from the server before any filter is
		// decided: the lead stays where it is whatever the config's order
		// (ChooseLeads).
		leads, resumed, err := d.leadsAtBind(actx, floors, names, sweeps)
		if err != nil {
			return retryable(err)
		}
		for i, sc := range d.cfg.Sinks {
			s, ok := d.sinks[sc.Name]
			if !ok {
				return backoff.Permanent(fmt.Errorf("dispatch: sink %s is configured but was not built", sc.Name))
			}
			lead := leads[sc.Name]
			filter := SinkFilter(sc.Name, d.cfg.Routes, d.cfg.Streams.FilterByRoute, lead)
			settings := topology.ConsumerSettings{AckWait: d.ackWait, MaxAckPending: sc.MaxAckPending,
				Fence: Fingerprint(sc.Name, d.cfg.Routes, sc.Order, filter), Filter: filter, Lead: lead,
				Leads: slices.Collect(maps.Keys(leads))}
			var key func(*envelope.Event) string
			if sc.Order != nil {
				settings.PinnedTTL = orderPinnedTTL(d.ackWait)
				var err error
				if key, err = orderKeyFunc(sc.Order, d.log); err != nil {
					return backoff.Permanent(fmt.Errorf("dispatch: sinks[%d].order.key: %w", i, err))
				}
			}
			settings.Start, settings.Floors, settings.FloorsUnavailable = sc.StartTime(), floors, floorsErr
			// A consumer recreated is found in place by the next try, and
			// a try may be cut at any request after: its loss is reported
			// as soon as EnsureSink establishes it.
			settings.Lost = func(r topology.Restored) {
				if key := sc.Name + "\x00" + r.Stream + "\x00" + r.Instance.String(); !reported[key] {
					reported[key] = true
					d.reportRestored(sc.Name, r)
				}
			}
			cons, err := d.topo.EnsureSink(actx, d.js, sc.Name, settings)
			if errors.Is(err, topology.ErrFloorUnknown) {
				return backoff.Permanent(fmt.Errorf("dispatch: sinks[%d] (%s): %w; starting it from new events would skip its backlog without a word, "+
					"from the stream's first event would deliver up to streams.max_age of events again: set sinks[%d].start to the time to deliver from "+
					"(when it last delivered, say: what was stored since is delivered, some of it again; start applies only to consumers being created), "+
					"start, then remove it (docs/operations.md, \"A consumer was deleted\")", i, sc.Name, err, i))
			}
			if err != nil {
				return retryable(err)
			}
			if made, ok := sweeps[sc.Name]; ok {
				// Widened and still held: its sweeps judge up to where it
				// goes on from (topology.PassedTo), not the bound recorded
				// before it was widened, and are recorded so for a bind
				// that resumes them. Unread, the bound stands.
				//
				// Held, the bound is at or above where it was widened, and
				// only lowered: a bind tried again after it released the
				// consumer reads it further on, past what it has delivered
				// since (dead-lettered too, were the bound raised). Not
				// held, the bound is its last delivery, below what its
				// pulls passed over, and only raised: read once widened,
				// PassedTo is at or above where it was widened.
				for i := range made {
					sw := &made[i]
					at, err := topology.PassedTo(actx, d.js, d.topo.EventsStreamOf(sw.partition), topology.SinkConsumer(sc.Name))
					if err != nil {
						msg := "could not read where the new lead's widened consumer goes on from: its sweep judges the events " +
							"stored before the widening as passed over, some of which it delivers (dead-lettered too)"
						if !sw.held {
							msg = "could not read where the new lead's widened consumer goes on from: its sweep judges by its last delivery, " +
								"and what its pulls passed over beyond it is not checked"
						}
						d.log.Warn(msg, zap.String("sink", sc.Name), zap.Error(err))
						continue
					}
					moved := (sw.held && at < sw.prior.Delivered) || (!sw.held && at > sw.prior.Delivered)
					if !moved && !sw.unrecorded {
						continue
					}
					if moved {
						sw.prior.Delivered = at
						sw.unrecorded = true // until written (none may be, floors unread)
					}
					if floors != nil {
						err := d.topo.WriteSweep(actx, floors, sc.Name, sw.partition, topology.PendingSweep{From: sw.from, Prior: sw.prior})
						// A try cut short here has moved the bound in
						// memory only: the next writes it, or a bind that
						// resumes the record judges by the old bound.
						sw.unrecorded = err != nil
						if err != nil {
							d.log.Warn("the new lead's sweep is recorded up to the stream's end at its hold, not where its consumer goes on from; "+
								"a bind that resumes it judges some events the consumer delivers as passed over (dead-lettered too)",
								zap.String("sink", sc.Name), zap.Error(err))
						}
					}
				}
				// Widened: let its readers go on (HoldForWidening).
				if err := topology.ReleaseWidened(actx, d.js, cons.Events); err != nil {
					return retryable(err)
				}
			}
			if cons.FloorsNotWritten != nil {
				d.log.Warn("could not record the sink's ack floors at bind; the healer tries again as they move",
					zap.String("sink", sc.Name), zap.Error(cons.FloorsNotWritten))
			}
			if cons.Unmarked != "" {
				d.log.Warn("sink was being removed (dispatcher sinks remove marked its consumers); this replica runs it, "+
					"so it keeps it: the mark is cleared and a removal under way gives up", zap.String("sink", sc.Name), zap.String("marked", cons.Unmarked))
			}
			if err := d.starts.local(sc.Name, cons.Events); err != nil {
				return retryable(err)
			}
			if a, ok := d.built[sc.Name].(sinks.Attacher); ok {
				st := sinks.State{JS: d.js, Prefix: d.topo.StreamPrefix(), Replicas: d.cfg.Streams.Replicas, Memory: d.cfg.Streams.Storage == "memory"}
				if err := a.Attach(actx, st); err != nil {
					return retryable(err)
				}
			}
			for i, c := range cons.Events {
				h := newHealer(d.engine, sc.Name, c, true)
				lead := topology.IsLead(c.CachedInfo())
				start, err := topology.StartOf(c.CachedInfo())
				if err != nil {
					return retryable(err)
				}
				h.rec = &floorRecord{topo: d.topo, js: d.js, kv: floors, sink: sc.Name,
					floor:    topology.Floor{Stream: h.stream, StreamCreated: cons.StreamsCreated[i], StartSeq: start, Lead: lead},
					instance: c.CachedInfo().Created,
					log:      d.log.With(zap.String("sink", sc.Name), zap.String("stream", h.stream), zap.String("consumer", h.cfg.Durable))}
				if floors != nil {
					// EnsureSink recorded the floor. Else (bound without
					// the bucket: it could be neither made nor read) the
					// bucket is made again as the healer writes
					// (floorRecord.write).
					h.rec.written, h.rec.writtenLead, h.rec.at = h.floor.Load(), lead, time.Now()
				}
				cons.Events[i] = &healing{Consumer: c, h: h}
			}
			cons.Retries = &healing{Consumer: cons.Retries, h: newHealer(d.engine, sc.Name, cons.Retries, false)}
			w := &sinkWorker{
				engine: d.engine, name: sc.Name, sink: s, policy: sc.Retry, lead: lead,
				gate: newGate(sc.Name, sc.Breaker, sc.Concurrency, d.log, d.obs.BreakerChanged),
			}
			w.gate.pace = newPacer(sc.RateLimit, func(perSecond float64) { d.obs.RateLimit(sc.Name, perSecond) })
			w.gate.sending = func(delta int) { d.obs.InFlight(sc.Name, delta) }
			// The probe's lease: its request ends within the sink's
			// timeout; a second more for its answer to be shared.
			sp := newSharedPause(sc.Name, me, sc.Timeout+time.Second, d.log)
			sp.learn = w.gate.learn
			w.gate.shared = sp
			board.add(sp)
			board.addOperator(sc.Name, w.gate, d.obs, d.log)
			home := cons.Events[0]
			name, mine := sc.Name, settings.Fence
			readFence := func(ctx context.Context) (string, error) {
				info, err := home.Info(ctx)
				if err != nil {
					return "", fmt.Errorf("dispatch: read the fence of %s: %w", name, err)
				}
				mark, marked := topology.Removing(info)
				if !marked {
					return info.Config.Metadata[topology.FenceMetadata], nil
				}
				// Marked for removal after this replica bound it: it runs
				// the sink, so its config wins, as at a bind (and the
				// fence the mark wrote may be one read before this
				// replica's bind: topology.Reclaim).
				n, err := d.topo.Reclaim(ctx, d.js, name, mine, filter)
				if err != nil {
					return "", err
				}
				if n > 0 {
					d.log.Warn("sink was being removed (dispatcher sinks remove marked its consumers) while this replica runs it; "+
						"it keeps it: the mark is cleared and a removal under way gives up", zap.String("sink", name), zap.String("marked", mark))
				}
				return mine, nil
			}
			w.fence = newFence(sc.Name, settings.Fence, readFence, d.ackWait, sc.MaxAckPending, w.gate, d.log, d.obs.SinkFenced)
			w.fence.orphaned = func(ctx context.Context, theirs string) (bool, error) {
				return d.topo.OrphanedFence(ctx, d.js, name, theirs, me)
			}
			for i, c := range cons.Events {
				// A lead mark a healer puts back on a consumer recreated
				// narrow: what it passed over is swept (healer.seen).
				h := healerOf(c)
				h.partition = i
				h.sweep = func(ctx context.Context, s leadSweep) { w.sweep(ctx, d.js.Conn(), s) }
			}
			d.starts.fencedBy(sc.Name, w.fence.fenced)
			d.obs.SinkFenced(sc.Name, false)
			for _, c := range cons.Events {
				healerOf(c).fence = w.fence.lastOwner
			}
			if bs, ok := s.(sinks.BatchSink); ok && sc.Batch != nil {
				w.batch = newBatcher(w, bs, sc.Batch.MaxItems, sc.Batch.MaxWait, sc.MaxAckPending, sc.Concurrency)
			}
			out = append(out, boundSink{w: w, cons: cons, concurrency: sc.Concurrency, maxAckPending: sc.MaxAckPending, orderKey: key,
				sweeps: append(slices.Clone(sweeps[sc.Name]), resumed[sc.Name]...), floors: floors})
		}
		// The marks again, now that this bind wrote its own: another
		// dispatcher binding at the same time (another config, on a fresh
		// deployment) may have marked a sink this bind just narrowed, or
		// written over this bind's mark with a config read before it.
		// Either way a lead could be left reading only its types: bind
		// again, reading the marks again, until they are what this bind
		// wrote (a fence decides the rest, as for any two configs).
		after, err := d.topo.Leads(actx, d.js, floors, names)
		if err != nil {
			return retryable(err)
		}
		if !maps.Equal(after, leads) {
			return fmt.Errorf("dispatch: the sinks marked leads changed during this bind (another dispatcher bound them at the same time): "+
				"binding again; bound as leads %v, now marked %v", slices.Sorted(maps.Keys(leads)), slices.Sorted(maps.Keys(after)))
		}
		// The two steps below are not fatal, so a try whose time is
		// spent would skip them and succeed: they get time of their own,
		// more than a whole try's (a server that answers a try's first
		// requests slowly may answer these as slowly).
		lctx, lcancel := context.WithTimeout(ctx, 2*bindTryTimeout)
		defer lcancel()
		// The sinks added since a lead this config runs took over from
		// an old one, by a config running that lead, join its takeover
		// record, now that their consumers exist: that config judged for
		// them, and the sweep had nothing of theirs. Not fatal: `sinks
		// remove` of the old lead refuses while it has a backlog
		// (`--force` is the way out).
		if floors != nil {
			for name := range leads {
				widened, err := d.topo.WidenTakeovers(lctx, d.js, floors, name, names)
				if err != nil {
					d.log.Warn("could not add the sinks added since to the lead's takeover records: dispatcher sinks remove "+
						"refuses the old lead while it has a backlog", zap.String("sink", name), zap.Error(err))
				}
				if len(widened) > 0 {
					d.log.Info("added this config's sinks added since to the lead's takeover records", zap.String("sink", name),
						zap.Strings("records", widened))
				}
			}
		}
		// Not fatal: the partitions work with their leaders anywhere.
		if err := d.topo.SpreadLeaders(lctx, d.js, names); err != nil {
			d.log.Warn("could not spread the partitions' leaders over the servers", zap.Error(err))
		}
		return nil
	}
	b := backoff.NewExponentialBackOff(backoff.WithInitialInterval(250*time.Millisecond),
		backoff.WithMaxInterval(5*time.Second), backoff.WithMaxElapsedTime(0))
	err := backoff.RetryNotify(op, backoff.WithContext(b, ctx), func(err error, wait time.Duration) {
		if errors.Is(err, topology.ErrConsumerGone) {
			// Not the broker's state: a consumer deleted between two of
			// this bind's looks, which the next try recreates from its
			// floor (and reports).
			d.log.Warn("a sink's consumer was deleted while binding; binding again, which recreates it from its floor",
				zap.Duration("next_try", wait), zap.Error(err))
			return
		}
		d.log.Warn("JetStream not ready; waiting", zap.Duration("next_try", wait), zap.Error(err))
	})
	if err != nil {
		return nil, nil, err
	}
	return out, board, nil
}

// leadsAtBind is which of names lead (ChooseLeads over the marks read
// from the server) and, for each, the sweeps of an old lead's backlog it
// owes: those a sink this bind makes the lead reads now, before it is
// widened, into sweeps (kept across the bind's attempts: a bind tried
// again finds the sink marked) and records in the floors bucket; and
// resumed, those a sink that leads already had recorded and not done (a
// replica that made it the lead stopped before the end), which this
// replica does again.
func (d *Dispatcher) leadsAtBind(ctx context.Context, floors jetstream.KeyValue, names []string, sweeps map[string][]leadSweep) (
	leads map[string]bool, resumed map[string][]leadSweep, err error) {
	marked, err := d.topo.Leads(ctx, d.js, floors, names)
	if err != nil {
		return nil, nil, err
	}
	leads, resumed = ChooseLeads(names, marked), map[string][]leadSweep{}
	for name := range leads {
		// A sink made the lead by an earlier attempt of this bind is
		// marked, and keeps the sweeps read then; one still unmarked
		// was not widened, and is read again.
		if marked[name] {
			if _, made := sweeps[name]; !made && floors != nil {
				pending, err := d.topo.PendingSweeps(ctx, floors, name)
				if err != nil {
					return nil, nil, err
				}
				for i, p := range pending {
					resumed[name] = append(resumed[name], leadSweep{partition: i, from: p.From, prior: p.Prior})
				}
				// What is left of it is checked by this config's routes:
				// its takeovers vouch for this config's sinks only
				// (topology.LeadRemoval). Not fatal: `sinks remove`
				// refuses the old lead until the sweep is done, and after
				// that a takeover not narrowed may vouch for a sink this
				// config lacks.
				if len(pending) > 0 {
					if err := d.topo.NarrowTakeovers(ctx, floors, name, names); err != nil {
						d.log.Warn("could not narrow the lead's takeover records to the sinks of this config, which resumes its sweep: "+
							"dispatcher sinks remove may let an old lead go on a check this config does not make", zap.String("sink", name), zap.Error(err))
					}
				}
			}
			continue
		}
		// Read again, unmarked: an earlier attempt's widening may have
		// been cut short before the server applied it, or only landed
		// after the marks were read (then this read finds a consumer
		// that reads every subject, and owes no sweep): what the earlier
		// attempt found owed stands (withEarlier).
		earlier, triedBefore := sweeps[name]
		var dropped []string
		if sweeps[name], dropped, err = d.leadSweeps(ctx, name, names); err != nil {
			if triedBefore {
				sweeps[name] = earlier
			} else {
				delete(sweeps, name)
			}
			return nil, nil, err
		}
		sweeps[name] = withEarlier(sweeps[name], earlier)
		// Recorded before the widening, so that a stop at any point
		// after it leaves the sweep to the next bind.
		// Not fatal (the bucket down, a record past its value size):
		// the sweep runs, only a cut short one is not resumed.
		recorded := floors != nil
		for _, sw := range sweeps[name] {
			err := errors.New("the floors bucket is unavailable")
			if floors != nil {
				err = d.topo.WriteSweep(ctx, floors, name, sw.partition, topology.PendingSweep{From: sw.from, Prior: sw.prior})
			}
			if err != nil {
				recorded = false
				d.log.Warn("the new lead's sweep of the old lead's backlog is not recorded, and not resumed if it is cut short",
					zap.String("sink", name), zap.Error(err))
			}
		}
		// And that it sweeps in place of the leads the config dropped,
		// only if its sweeps are recorded (so resumed until done): `sinks remove` lets
		// an old lead with a backlog go on that record
		// (topology.LeadRemoval), and a lead made after it is gone would
		// sweep from another lead's floor. Not fatal either: the removal
		// is refused until the old lead has read its backlog.
		// Where the streams stand: read after the prior reads, so at or
		// above where the widened consumers read from; a sink whose
		// consumers start above it joins the record later
		// (topology.WidenTakeovers). Without it the record is kept as
		// it is, and a sink added later is not.
		var through map[string]uint64
		if recorded && len(dropped) > 0 {
			if through, err = d.topo.Positions(ctx, d.js); err != nil {
				d.log.Warn("could not read where the events streams stand for the takeover record: a sink added later "+
					"is not added to it (dispatcher sinks remove refuses the old lead while it has a backlog)", zap.String("sink", name), zap.Error(err))
			}
		}
		for _, old := range dropped {
			err := errors.New("its sweep is not recorded")
			if recorded {
				err = d.topo.WriteTakeover(ctx, floors, old, topology.Takeover{By: name, Sinks: names, At: time.Now().UTC(), Through: through})
			}
			if err != nil {
				d.log.Warn("not recorded as the lead in place of the old one: dispatcher sinks remove refuses the old lead "+
					"while it has events it has not read", zap.String("sink", name), zap.String("old_lead", old), zap.Error(err))
			}
		}
	}
	return leads, resumed, nil
}

// leadHold bounds how long a bind making a sink the lead holds its
// consumers still (topology.HoldForWidening) if it stops before it widens
// them: their other readers wait that long, once.
const leadHold = 30 * time.Second

// leadSweeps reads what sink, about to be made the lead, passed over of
// what the leads the config dropped (marked, not among names) had not
// acked: its sweeps (sweep.go), and those leads.
func (d *Dispatcher) leadSweeps(ctx context.Context, sink string, names []string) ([]leadSweep, []string, error) {
	prior, err := d.topo.PriorReads(ctx, d.js, sink)
	if err != nil {
		return nil, nil, err
	}
	// Other replicas (of the old config) pull from these consumers until
	// they are widened: what they pass over between this read and the
	// widening would be judged by neither the sweep (above the position
	// read) nor the widened consumer (below its position). Held still,
	// read again.
	// Read so, a held consumer's prior read is the stream's end: at or
	// above where it stands, lowered to it once it is widened (bind).
	held := true
	if err := d.topo.HoldForWidening(ctx, d.js, sink, prior, time.Now().Add(leadHold)); err != nil {
		held = false
		d.log.Warn("could not hold the new lead's consumers still while it is made the lead; what other replicas pass over meanwhile "+
			"off its former subjects is not checked", zap.String("sink", sink), zap.Error(err))
	} else if prior, err = d.topo.HeldPriorReads(ctx, d.js, sink); err != nil {
		return nil, nil, err
	}
	floors, found, dropped, err := d.topo.LeadFloors(ctx, d.js, names)
	if err != nil {
		return nil, nil, err
	}
	if !held {
		// Its sweep may miss what was passed over meanwhile: it vouches
		// for none of the dropped leads (no takeover is recorded), so
		// `sinks remove` refuses each until it has drained.
		dropped = nil
	}
	out := leadSweeps(prior, floors, found)
	for i := range out {
		out[i].held = held
	}
	return out, dropped, nil
}

// reportRestored logs, once, an events consumer bind found missing and
// recreated (topology.Restored), and counts it as a loss
// (chapar_consumer_losses_total) unless it is a stream the sink never had
// a consumer on.
func (d *Dispatcher) reportRestored(sink string, r topology.Restored) {
	log := d.log.With(zap.String("sink", sink), zap.String("stream", r.Stream), zap.String("consumer", topology.SinkConsumer(sink)),
		zap.Uint64("from_stream_sequence", r.From), zap.Uint64("start_seq", r.StartSeq))
	switch r.Plan {
	case topology.LostFromFirst:
		log.Info("the sink's events consumer on this stream never existed (a new events stream: a change of streams.partitions?); " +
			"created from the stream's first event, since the sink is not new")
		return
	case topology.LostFromStart:
		log.Warn("the sink's events consumer was missing and where it stood is not recorded; created from sinks[].start " +
			"(chapar_consumer_losses_total counts this)")
	case topology.LostFromFloor:
		log = log.With(zap.Uint64("recorded_ack_floor", r.Floor.AckFloor), zap.Time("floor_recorded_at", r.Floor.Updated),
			zap.Uint64("delivered_again_at_most", r.AgainAtMost))
		if r.Gone > 0 {
			log.Error("the sink's events consumer was lost while no dispatcher ran; recreated above its recorded ack floor, "+
				"but events past the floor left the stream (streams.max_age) before it was back: they cannot be delivered "+
				"(chapar_consumer_losses_total counts this)", zap.Uint64("unrecoverable_at_most", r.Gone))
		} else {
			log.Warn("the sink's events consumer was lost while no dispatcher ran; recreated above its recorded ack floor: " +
				"events acked since the floor was recorded are delivered again (chapar_consumer_losses_total counts this)")
		}
	}
	d.obs.ConsumerLost(sink)
	d.obs.ConsumerBack(sink)
}

// bindTryTimeout is how long each of bind's tries may take. Tries of 2,
// 4 and 8 s first bound a forming cluster sooner (16-28 s against 43 s),
// but cut short binds that are only slow, where every step a cut try
// leaves half done is a defect to guard against (reviews rev17, rev18):
// a cut is kept for the cluster that does not answer.
const bindTryTimeout = 10 * time.Second

// formingGrace is how long after a dispatcher starts binding a refused
// placement is taken for a cluster still forming.
const formingGrace = time.Minute

// retryableSince is retryable for a bind that began since ago: early on,
// a placement refused for want of peers is waited out whatever the
// server's words. A cluster whose nodes have not all reported to the
// meta leader yet answers "no suitable peers for placement" without
// "peer offline" (seen on a 3-node cluster of nats-server 2.15.2 started
// with the dispatchers, cmd/bench's scale-r2-p3); after formingGrace the
// refusal is the config's (more replicas than servers) and permanent.
func retryableSince(err error, since time.Duration) error {
	var apiErr *jetstream.APIError
	if since < formingGrace && errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.ErrorCode(errClusterNoPeers) {
		return err
	}
	return retryable(err)
}

// retryable marks the errors waiting can fix (a timeout, no responders, a
// cluster without a leader or quorum: JetStream's 503s) as retryable, and
// every other error (a bad stream config, say) as permanent.
func retryable(err error) error {
	var apiErr *jetstream.APIError
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound):
		// bind creates every stream, so one found missing is one being
		// created: on a forming cluster a stream another dispatcher is
		// creating is listed before it can be looked up.
		return err
	case errors.Is(err, topology.ErrConsumerGone):
		// Lost during the bind: the next try recreates it from its floor.
		return err
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, nats.ErrTimeout),
		errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoHeartbeat),
		errors.Is(err, nats.ErrConnectionReconnecting), errors.Is(err, nats.ErrDisconnected):
		return err
	case errors.As(err, &apiErr) && apiErr.ErrorCode == errStreamInvalidConfig:
		// A 500 too, but the config's: the server's check of a stream's
		// settings (a max_age under the duplicate window, say) answers
		// the same however long one waits.
		return backoff.Permanent(err)
	case errors.As(err, &apiErr) && apiErr.Code >= 500:
		return err
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.ErrorCode(errClusterNoPeers) &&
		strings.Contains(apiErr.Description, "offline"):
		// A forming cluster answers 400 "no suitable peers for placement,
		// peer offline" until every node has joined: waiting fixes it.
		// Without "offline" (too few servers for the replicas asked) it
		// would not, and stays permanent.
		return err
	}
	return backoff.Permanent(err)
}

// errClusterNoPeers is nats-server's JSClusterNoPeersErrF.
const errClusterNoPeers = 10005

// errStreamInvalidConfig is nats-server's JSStreamInvalidConfigF.
const errStreamInvalidConfig jetstream.ErrorCode = 10052
