// Package dispatch moves events from JetStream to vendors: the router
// validates each event and fans it out to its sinks' queues, and each sink's
// worker pool delivers from its own durable consumer with the sink's retry
// policy and circuit breaker.
package dispatch

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Options configure a Dispatcher.
type Options struct {
	Topology   topology.Topology
	Dispatcher config.Dispatcher
	// SinkConfigs and Sinks describe the same sinks: the config for the
	// policy, the Sink for delivery.
	SinkConfigs []config.Sink
	Sinks       map[string]sinks.Sink
	Routes      *Routes
	Observer    Observer
	Logger      *zap.Logger
	// Ready, if set, is called once every consumer is bound.
	Ready func()
}

// Dispatcher runs the router and every sink's worker pool.
type Dispatcher struct {
	js   jetstream.JetStream
	o    Options
	dlq  *dlq.Writer
	log  *zap.Logger
	obs  Observer
	maxB int
}

// New prepares a dispatcher; Run starts it.
func New(js jetstream.JetStream, o Options) *Dispatcher {
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.Observer == nil {
		o.Observer = NewTally()
	}
	if o.Routes == nil {
		o.Routes = NewRoutes(nil)
	}
	return &Dispatcher{
		js:   js,
		o:    o,
		dlq:  dlq.NewWriter(js, o.Topology),
		log:  o.Logger,
		obs:  o.Observer,
		maxB: o.Topology.MaxEnvelopeBytes(),
	}
}

// Run consumes until ctx is done, then drains: it stops fetching, hands
// back what it fetched but did not start, and lets in-flight deliveries
// finish for up to ShutdownGrace before handing them back too. Nothing is
// acked that the vendor did not accept.
func (d *Dispatcher) Run(ctx context.Context) error {
	cfg := d.o.Dispatcher
	topo := d.o.Topology
	settings := topology.ConsumerSettings{AckWait: cfg.AckWait, MaxAckPending: 1000, MaxDeliver: -1}
	if err := topo.Ensure(ctx, d.js, settings); err != nil {
		return err
	}
	router, err := d.js.Consumer(ctx, topo.EventsStream(), topology.RouterConsumer)
	if err != nil {
		return fmt.Errorf("dispatch: router consumer: %w", err)
	}
	type pool struct {
		name string
		c    jetstream.Consumer
		n    int
		w    *sinkWorker
	}
	pools := []pool{{name: "router", c: router, n: cfg.RouterConcurrency}}
	for _, sc := range d.o.SinkConfigs {
		s, ok := d.o.Sinks[sc.Name]
		if !ok {
			return fmt.Errorf("dispatch: sink %s is configured but was not built", sc.Name)
		}
		cs := settings
		cs.MaxAckPending = sc.MaxAckPending
		// JetStream's own bound sits above the policy's, so the policy
		// decides; the MAX_DELIVERIES safety net catches the rest.
		cs.MaxDeliver = sc.Retry.MaxDeliveries()
		c, err := topo.EnsureSink(ctx, d.js, sc.Name, cs)
		if err != nil {
			return err
		}
		w := &sinkWorker{
			d:       d,
			sink:    s,
			name:    sc.Name,
			policy:  sc.Retry,
			breaker: retry.NewBreaker(sc.Name, sc.Breaker, d.log, d.obs.BreakerChanged),
		}
		pools = append(pools, pool{name: sc.Name, c: c, n: sc.Concurrency, w: w})
	}
	for _, p := range pools[1:] {
		sub, err := d.watchMaxDeliveries(ctx, p.name)
		if err != nil {
			return err
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	d.log.Info("dispatcher consuming", zap.Int("sinks", len(pools)-1), zap.String("events", topo.EventsSubjects()))
	if d.o.Ready != nil {
		d.o.Ready()
	}

	// workCtx outlives ctx by the grace period, for in-flight work.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	stopGrace := context.AfterFunc(ctx, func() {
		d.log.Info("draining", zap.Duration("grace", cfg.ShutdownGrace))
		time.AfterFunc(cfg.ShutdownGrace, cancelWork)
	})
	defer stopGrace()

	var wg sync.WaitGroup
	for _, p := range pools {
		wg.Go(func() {
			if p.w == nil {
				d.consume(ctx, workCtx, p.c, p.n, nil, d.route)
			} else {
				d.consume(ctx, workCtx, p.c, p.n, p.w.ready, p.w.handle)
			}
		})
	}
	wg.Wait()
	return nil
}

// consume runs n workers over one consumer. Messages are fetched only for
// idle workers, so none waits in a client-side buffer with its ack timer
// running (during a long vendor outage such messages would be redelivered
// again and again, burning deliveries). Each batch of idle workers gets its
// own short pull request, so a worker freed while another pull is pending
// does not wait for it. ready, if set, is waited on before each fetch: a sink
// whose breaker is open pulls nothing.
func (d *Dispatcher) consume(ctx, workCtx context.Context, c jetstream.Consumer, n int, ready func(context.Context) error, handle func(context.Context, jetstream.Msg)) {
	idle := make(chan struct{}, n)
	for range n {
		idle <- struct{}{}
	}
	jobs := make(chan jetstream.Msg)
	var workers, fetches sync.WaitGroup
	for range n {
		workers.Go(func() {
			for msg := range jobs {
				handle(workCtx, msg)
				idle <- struct{}{}
			}
		})
	}
	defer func() {
		fetches.Wait()
		close(jobs)
		workers.Wait()
	}()
	for {
		if ready != nil {
			if err := ready(ctx); err != nil {
				return // shutting down
			}
		}
		// Wait for one idle worker, then take every other idle one.
		select {
		case <-ctx.Done():
			return
		case <-idle:
		}
		want := 1
		for more := true; more && want < n; {
			select {
			case <-idle:
				want++
			default:
				more = false
			}
		}
		fetches.Go(func() { d.fetch(ctx, workCtx, c, want, jobs, idle) })
	}
}

// fetch pulls up to want messages for as many reserved idle workers, hands
// them over, and returns the reservations it did not use.
func (d *Dispatcher) fetch(ctx, workCtx context.Context, c jetstream.Consumer, want int, jobs chan<- jetstream.Msg, idle chan<- struct{}) {
	got := 0
	defer func() {
		for range want - got {
			idle <- struct{}{}
		}
	}()
	// A short-lived pull request (it expires within a second). Shutdown
	// lets it run out rather than cancel it: messages the server has
	// already sent would be dropped in transit and come back only after
	// ack_wait; received, they are handed back at once below.
	fctx, cancel := context.WithTimeout(workCtx, time.Second)
	defer cancel()
	batch, err := c.Fetch(want, jetstream.FetchContext(fctx))
	if err != nil {
		if ctx.Err() == nil {
			d.log.Warn("fetch failed; retrying", zap.Error(err))
			<-fctx.Done() // pace retries
		}
		return
	}
	for msg := range batch.Messages() {
		got++
		if ctx.Err() != nil {
			// Fetched but not started: hand it back at once so another
			// replica can take it.
			_ = msg.Nak()
			idle <- struct{}{}
			continue
		}
		jobs <- msg
	}
}

// route validates an event and fans it out: one message per sink on the
// deliveries stream, de-duplicated per (event, sink), then acks.
func (d *Dispatcher) route(ctx context.Context, msg jetstream.Msg) {
	meta, err := msg.Metadata()
	if err != nil {
		d.log.Error("message without JetStream metadata", zap.Error(err))
		_ = msg.Term()
		return
	}
	if meta.NumDelivered == 1 {
		d.obs.Received()
	}
	ev, err := envelope.ParseMessage(msg.Headers(), msg.Data(), d.maxB)
	if err != nil {
		d.deadLetter(ctx, msg, &dlq.Record{
			Sink: dlq.NoSink, Reason: sinks.ReasonInvalidEnvelope, Error: err.Error(),
			EventID: eventID(msg.Headers(), msg.Data()), Attempts: int(meta.NumDelivered),
			FirstAttempt: meta.Timestamp, LastAttempt: time.Now(),
		})
		return
	}
	targets := d.o.Routes.Match(ev)
	if len(targets) == 0 {
		d.obs.Unrouted(ev.Type, ev.Name())
		d.log.Info("event matched no route", zap.String("event_id", ev.ID), zap.String("type", ev.Type), zap.String("name", ev.Name()))
		d.ack(ctx, msg)
		return
	}
	received := meta.Timestamp.UTC().Format(time.RFC3339Nano)
	var futures []jetstream.PubAckFuture
	for _, sink := range targets {
		if _, ok := d.o.Sinks[sink]; !ok {
			err := d.recordDeadLetter(ctx, &dlq.Record{
				Sink: sink, Reason: "unknown_destination", EventID: ev.ID, EventType: ev.Type,
				Error:    fmt.Sprintf("destinations names sink %q, which is not configured", sink),
				Attempts: 0, FirstAttempt: meta.Timestamp, LastAttempt: time.Now(),
				Header: msg.Headers(), Data: msg.Data(), Subject: msg.Subject(),
				OriginStream: meta.Stream, OriginSeq: meta.Sequence.Stream,
			})
			if err != nil {
				d.retryRoute(msg, err) // the record is de-duplicated on retry
				return
			}
			continue
		}
		out := nats.NewMsg(d.o.Topology.DeliverSubject(sink))
		for k, v := range msg.Headers() {
			out.Header[k] = v
		}
		out.Header.Set(topology.HeaderReceived, received)
		out.Data = msg.Data()
		f, err := d.js.PublishMsgAsync(out, jetstream.WithMsgID(topology.DeliveryMsgID(ev.ID, sink)))
		if err != nil {
			d.retryRoute(msg, err)
			return
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			d.retryRoute(msg, err)
			return
		case <-ctx.Done():
			_ = msg.Nak()
			return
		}
	}
	d.ack(ctx, msg)
}

// retryRoute hands an event back after a failed fan-out; the per-sink
// de-duplication makes the repeat harmless for sinks already queued.
func (d *Dispatcher) retryRoute(msg jetstream.Msg, err error) {
	d.log.Warn("fan-out failed; will retry", zap.Error(err))
	_ = msg.NakWithDelay(time.Second)
}

func (d *Dispatcher) ack(ctx context.Context, msg jetstream.Msg) {
	if err := msg.DoubleAck(ctx); err != nil {
		d.log.Warn("ack not confirmed; the message may be redelivered", zap.Error(err))
	}
}

// deadLetter records a dead letter for msg and only then acks it. If the
// record cannot be written, msg is handed back: it is never lost.
func (d *Dispatcher) deadLetter(ctx context.Context, msg jetstream.Msg, rec *dlq.Record) {
	rec.Header, rec.Data, rec.Subject = msg.Headers(), msg.Data(), msg.Subject()
	if meta, err := msg.Metadata(); err == nil {
		rec.OriginStream, rec.OriginSeq = meta.Stream, meta.Sequence.Stream
	}
	if n, err := strconv.Atoi(msg.Headers().Get(topology.HeaderReplays)); err == nil {
		rec.Replays = n
	}
	if err := d.recordDeadLetter(ctx, rec); err != nil {
		_ = msg.NakWithDelay(5 * time.Second)
		return
	}
	d.ack(ctx, msg)
}

// recordDeadLetter writes a record and returns once JetStream confirmed it.
func (d *Dispatcher) recordDeadLetter(ctx context.Context, rec *dlq.Record) error {
	if err := d.dlq.Write(ctx, rec); err != nil {
		d.log.Error("dead letter not written; handing the event back", zap.String("event_id", rec.EventID), zap.Error(err))
		return err
	}
	d.obs.DeadLettered(rec.Sink, rec.Reason, rec.Status, rec.Code)
	d.log.Warn("dead-lettered",
		zap.String("event_id", rec.EventID), zap.String("sink", rec.Sink), zap.String("reason", rec.Reason),
		zap.Int("status", rec.Status), zap.String("code", rec.Code), zap.Int("attempts", rec.Attempts),
		zap.String("error", rec.Error))
	return nil
}

// heartbeat sends in-progress acks for msg every interval until stopped.
func heartbeat(msg jetstream.Msg, every time.Duration) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress()
			}
		}
	}()
	return func() { close(done) }
}

// sinkWorker delivers one sink's queue.
type sinkWorker struct {
	d       *Dispatcher
	sink    sinks.Sink
	name    string
	policy  retry.Policy
	breaker *retry.Breaker
	// pausedUntil (unix nanos) holds the whole sink back after a vendor's
	// Retry-After: the vendor throttles the account, not one event.
	pausedUntil atomic.Int64
}

// ready blocks while the sink must not pull: breaker open or paused.
func (w *sinkWorker) ready(ctx context.Context) error {
	if err := w.waitPause(ctx, nil); err != nil {
		return err
	}
	return w.breaker.WaitNotOpen(ctx)
}

// pause holds the whole sink back for d, unless it is paused for longer.
func (w *sinkWorker) pause(d time.Duration) {
	until := time.Now().Add(d).UnixNano()
	for {
		cur := w.pausedUntil.Load()
		if cur >= until || w.pausedUntil.CompareAndSwap(cur, until) {
			return
		}
	}
}

// waitPause blocks until a vendor's Retry-After has passed, calling tick
// every 100ms meanwhile.
func (w *sinkWorker) waitPause(ctx context.Context, tick func()) error {
	for {
		until := time.Unix(0, w.pausedUntil.Load())
		wait := time.Until(until)
		if wait <= 0 {
			return nil
		}
		t := time.NewTimer(min(wait, 100*time.Millisecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
			if tick != nil {
				tick()
			}
		}
	}
}

func (w *sinkWorker) handle(ctx context.Context, msg jetstream.Msg) {
	d := w.d
	meta, err := msg.Metadata()
	if err != nil {
		d.log.Error("message without JetStream metadata", zap.Error(err))
		_ = msg.Term()
		return
	}
	ev, err := envelope.ParseMessage(msg.Headers(), msg.Data(), 0)
	if err != nil {
		d.deadLetter(ctx, msg, &dlq.Record{
			Sink: w.name, Reason: sinks.ReasonInvalidEnvelope, Error: err.Error(), EventID: eventID(msg.Headers(), msg.Data()),
			Attempts: int(meta.NumDelivered), FirstAttempt: meta.Timestamp, LastAttempt: time.Now(),
		})
		return
	}
	received, err := time.Parse(time.RFC3339Nano, msg.Headers().Get(topology.HeaderReceived))
	if err != nil {
		received = meta.Timestamp
	}
	delivery := &sinks.Delivery{Event: ev, ReceivedAt: received}

	var derr error
	var probe bool
	// Held messages are kept alive well inside ack_wait.
	lastAlive := time.Now()
	keepAlive := func() {
		if time.Since(lastAlive) >= d.o.Dispatcher.AckWait/3 {
			_ = msg.InProgress()
			lastAlive = time.Now()
		}
	}
	for {
		// Held messages are kept alive while the sink waits for the
		// vendor's Retry-After or for its breaker.
		if err := w.waitPause(ctx, keepAlive); err != nil {
			_ = msg.Nak() // out of grace: hand back, not a failed attempt
			return
		}
		release, isProbe, err := w.breaker.Wait(ctx, keepAlive)
		if err != nil {
			_ = msg.Nak()
			return
		}
		probe = isProbe
		derr = w.breaker.Do(func() error {
			start := time.Now()
			d.obs.InFlight(w.name, 1)
			// A slow vendor may take longer than ack_wait: heartbeat so
			// JetStream does not hand the event to another replica, while
			// a crashed process still loses it after one ack_wait.
			stopBeat := heartbeat(msg, d.o.Dispatcher.AckWait/3)
			err := w.sink.Deliver(ctx, delivery)
			stopBeat()
			d.obs.InFlight(w.name, -1)
			d.obs.VendorRequest(w.name, time.Since(start), err)
			return err
		})
		release()
		if !errors.Is(derr, retry.ErrRejected) {
			break
		}
	}
	if derr == nil {
		d.ack(ctx, msg)
		d.obs.Delivered(w.name, time.Since(received))
		return
	}
	if ctx.Err() != nil {
		_ = msg.Nak() // cut off by shutdown: hand back
		return
	}
	var serr *sinks.Error
	if !errors.As(derr, &serr) {
		serr = &sinks.Error{Reason: sinks.ReasonRetriesExhausted, Transient: true, Err: derr}
	}
	attempt := int(meta.NumDelivered)
	rec := &dlq.Record{
		Sink: w.name, Reason: serr.Reason, Status: serr.Status, Code: serr.Code, Error: derr.Error(),
		EventID: ev.ID, EventType: ev.Type, Attempts: attempt, FirstAttempt: meta.Timestamp, LastAttempt: time.Now(),
	}
	if serr.Transient {
		if serr.RetryAfter > 0 {
			w.pause(min(serr.RetryAfter, w.policy.MaxRetryAfter))
		}
		vendorDown := probe || !w.breaker.Closed()
		dec := w.policy.Next(attempt, meta.Timestamp, time.Now(), serr.RetryAfter, vendorDown)
		if dec.Retry {
			d.obs.Retried(w.name, serr.Status)
			d.log.Info("delivery failed; will retry", zap.String("event_id", ev.ID), zap.String("sink", w.name),
				zap.Int("attempt", attempt), zap.Duration("delay", dec.Delay), zap.Error(derr))
			_ = msg.NakWithDelay(dec.Delay)
			return
		}
		rec.Reason = sinks.ReasonRetriesExhausted
	}
	d.deadLetter(ctx, msg, rec)
}
