// Package opsevents publishes Chapar's operational events: CloudEvents of
// the chapar.ops.* types (a dead letter, a breaker opened or closed, a
// sink paused or resumed, a consumer recreated, a sink recovered, a
// replay done), documented in docs/envelope.md#operational-events.
//
// The Publisher is one more dispatch.Observer, composed with the metrics
// by internal/app: the engine tells it what happened as it tells the
// metrics, and it never slows or fails a delivery. An event is built on
// the caller's goroutine (a few hundred bytes, off the hot path: a dead
// letter, a state change) and handed to a bounded queue without waiting;
// one goroutine (Run) publishes the queue, each publish under a deadline.
// A full queue drops the event and counts it.
//
// Where they go: into the events stream, on the subject of their type
// (<prefix>.events.ops.<what>, partitioned by the sink they are about), so
// every sink's consumer reads them like any event and the routes apply:
// a route that names an ops type sends it to a sink (a webhook, for a
// team's chat), a route without types never does, and one about a sink
// never goes to that sink (dispatch.Routes, the loop guard). A separate
// stream would need a second consumer per sink, with its own start,
// fence, healer and floors; the events stream has them all.
//
// Bounds: a token bucket per type (ops_events.burst, per_minute) per
// replica; what it holds back is counted per (type, sink) and published
// as one chapar.ops.suppressed event once the storm is quiet for
// quietAfter, or every summaryEvery while it lasts. An ops event is never
// made about the failure to deliver an ops event, so nothing cascades.
package opsevents

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/sony/gobreaker/v2"
	"go.uber.org/zap"
	"golang.org/x/time/rate"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/redeliver"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Outcomes counted for each ops event (Counts).
const (
	Published  = "published"  // stored in the events stream
	Suppressed = "suppressed" // held back by its type's token bucket, counted in a summary
	Dropped    = "dropped"    // the queue was full
	Failed     = "failed"     // the publish failed or timed out
)

// Counts is told what became of each ops event, by type (the metrics:
// chapar_ops_events_total).
type Counts interface {
	OpsEvent(eventType, outcome string)
}

type noCounts struct{}

func (noCounts) OpsEvent(string, string) {}

const (
	// publishTimeout bounds each publish: a broker that does not answer
	// costs the queue that long, never a delivery.
	publishTimeout = 5 * time.Second
	// drainTimeout bounds publishing what is queued at shutdown.
	drainTimeout = 2 * time.Second
	// quietAfter and summaryEvery pace the chapar.ops.suppressed events:
	// one per (type, sink) once nothing was held back for quietAfter, or
	// every summaryEvery during a storm that does not stop.
	quietAfter   = 5 * time.Second
	summaryEvery = time.Minute
	// recoveredAfter is how many failed requests in a row to a sink,
	// followed by a success, make a chapar.ops.sink_recovered (fewer is
	// the ordinary retry of a transient failure, not news).
	recoveredAfter = 3
	// maxHeld bounds the (type, sink) counts of what the buckets hold
	// back: a dead letter's sink may be any name a producer's
	// destinations carry, so past it a sink not configured is counted
	// with the type's sinkless count (its summary names no sink).
	maxHeld = 1000
)

// The engine reports to it as to the metrics, with the particulars.
var (
	_ dispatch.Observer = (*Publisher)(nil)
	_ dispatch.Details  = (*Publisher)(nil)
)

// Publisher is a dispatch.Observer (and dispatch.Details) that publishes
// operational events. Safe for concurrent use.
type Publisher struct {
	cfg     config.OpsEvents
	topo    topology.Topology
	prefix  string
	source  string
	replica string
	log     *zap.Logger
	counts  Counts
	queue   chan outgoing

	mu      sync.Mutex
	buckets map[string]*rate.Limiter // by type
	held    map[heldKey]*heldBack

	// sinks is made once, from the config: read without a lock.
	sinks map[string]*sinkState
}

type outgoing struct {
	env *envelope.Envelope
	raw []byte
}

type heldKey struct{ typ, sink string }

type heldBack struct {
	n           int
	first, last time.Time
}

// sinkState is what the Publisher remembers of a sink between calls.
type sinkState struct {
	failures atomic.Int64 // failed requests in a row
	mu       sync.Mutex
	since    time.Time // the first of them
	lastErr  string
	opened   time.Time // the breaker opened (zero: closed)
	tripped  bool      // the breaker opened during this run of failures
	breaker  retry.State
	lost     []time.Time // consumers found gone, not yet back
	paused   bool
}

// New makes a Publisher for the sinks of cfg. Run publishes what it
// queues; until Run starts, events wait in the queue (bounded).
func New(cfg *config.Config, log *zap.Logger, counts Counts) *Publisher {
	if log == nil {
		log = zap.NewNop()
	}
	if counts == nil {
		counts = noCounts{}
	}
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown"
	}
	p := &Publisher{
		cfg: cfg.OpsEvents, topo: topology.New(cfg.Streams), prefix: cfg.Streams.SubjectPrefix,
		source:  "chapar://dispatcher/" + host,
		replica: host + "/" + strconv.Itoa(os.Getpid()),
		log:     log.With(zap.String("component", "ops_events")),
		counts:  counts,
		queue:   make(chan outgoing, max(cfg.OpsEvents.Buffer, 1)),
		buckets: map[string]*rate.Limiter{},
		held:    map[heldKey]*heldBack{},
		sinks:   map[string]*sinkState{},
	}
	for _, s := range cfg.Sinks {
		p.sinks[s.Name] = &sinkState{}
	}
	return p
}

// Run publishes the queue until ctx ends, then what is left of it for up
// to drainTimeout. Every publish has a deadline; a failure is counted
// and logged once per outage, never retried (the event would hold up the
// ones behind it; a dead letter stays in the dead-letter stream).
func (p *Publisher) Run(ctx context.Context, js jetstream.JetStream) {
	pub := envelope.NewPublisher(js, envelope.WithSubjectPrefix(p.prefix),
		envelope.WithPartitions(p.topo.Partitions()), envelope.WithMaxBytes(p.topo.MaxEnvelopeBytes()))
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	failing := false
	publish := func(ctx context.Context, o outgoing) {
		pctx, cancel := context.WithTimeout(ctx, publishTimeout)
		_, err := pub.PublishRaw(pctx, o.env, o.raw)
		cancel()
		if err != nil {
			p.counts.OpsEvent(o.env.Type, Failed)
			if !failing {
				failing = true
				p.log.Warn("operational events cannot be published; dropping them until they can (chapar_ops_events_total{outcome=\"failed\"} counts them)",
					zap.String("type", o.env.Type), zap.Error(err))
			}
			return
		}
		if failing {
			failing = false
			p.log.Info("operational events are published again")
		}
		p.counts.OpsEvent(o.env.Type, Published)
	}
	for {
		select {
		case o := <-p.queue:
			publish(ctx, o)
		case now := <-tick.C:
			p.summarize(now, false)
		case <-ctx.Done():
			p.summarize(time.Now(), true)
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), drainTimeout)
			defer cancel()
			for dctx.Err() == nil {
				select {
				case o := <-p.queue:
					publish(dctx, o)
				default:
					return
				}
			}
			return
		}
	}
}

// emit builds an ops event and queues it, if its type's bucket allows;
// id, when set, is its CloudEvents id and Nats-Msg-Id, so replicas that
// report the same happening store it once.
func (p *Publisher) emit(typ, sink, id string, data map[string]any) {
	now := time.Now()
	p.mu.Lock()
	b := p.buckets[typ]
	if b == nil {
		b = rate.NewLimiter(rate.Limit(p.cfg.PerMinute/60), p.cfg.Burst)
		p.buckets[typ] = b
	}
	if !b.AllowN(now, 1) {
		k := heldKey{typ, sink}
		h := p.held[k]
		if h == nil && len(p.held) >= maxHeld && p.sinks[sink] == nil {
			k = heldKey{typ, ""}
			h = p.held[k]
		}
		if h == nil {
			h = &heldBack{first: now}
			p.held[k] = h
		}
		h.n++
		h.last = now
		p.mu.Unlock()
		p.counts.OpsEvent(typ, Suppressed)
		return
	}
	p.mu.Unlock()
	p.queueEvent(typ, sink, id, now, data)
}

// queueEvent builds the envelope and hands it to the queue without
// waiting.
func (p *Publisher) queueEvent(typ, sink, id string, now time.Time, data map[string]any) {
	if id == "" {
		u, err := uuid.NewV7()
		if err != nil {
			p.counts.OpsEvent(typ, Dropped)
			return
		}
		id = u.String()
	}
	data["replica"] = p.replica
	opts := []envelope.Option{envelope.WithID(id), envelope.WithTime(now)}
	if sink != "" {
		// The sink it is about: the loop guard reads it, and it keys
		// the partition (one sink's reports keep their order).
		opts = append(opts, envelope.WithSubject(sink))
	}
	env, err := envelope.New(typ, p.source, data, opts...)
	if err == nil {
		var raw []byte
		if raw, err = env.Marshal(); err == nil {
			select {
			case p.queue <- outgoing{env: env, raw: raw}:
				return
			default:
				p.counts.OpsEvent(typ, Dropped)
				return
			}
		}
	}
	// A bug, not an outage: say it, but never fail the caller.
	p.log.Error("operational event not built", zap.String("type", typ), zap.Error(err))
	p.counts.OpsEvent(typ, Dropped)
}

// summarize publishes a chapar.ops.suppressed event for each (type, sink)
// whose storm has been quiet for quietAfter, or has lasted summaryEvery
// since its count began (all of them when final).
func (p *Publisher) summarize(now time.Time, final bool) {
	p.mu.Lock()
	var due []heldKey
	var counts []heldBack
	for k, h := range p.held {
		if final || now.Sub(h.last) >= quietAfter || now.Sub(h.first) >= summaryEvery {
			due = append(due, k)
			counts = append(counts, *h)
			delete(p.held, k)
		}
	}
	p.mu.Unlock()
	for i, k := range due {
		h := counts[i]
		data := map[string]any{"type": k.typ, "suppressed": h.n,
			"first": h.first.UTC().Format(time.RFC3339Nano), "last": h.last.UTC().Format(time.RFC3339Nano)}
		if k.sink != "" {
			data["sink"] = k.sink
		}
		p.queueEvent(envelope.TypeOpsSuppressed, k.sink, "", now, data)
	}
}

// DeadLetterStored publishes chapar.ops.dead_lettered, one per dead
// letter in the deployment: only the replica that stored it is told,
// and its id (the record's key) makes a second publish of it a
// duplicate. A dead letter of an ops event makes none: an ops event about
// failing to deliver an ops event would be routed on and could fail in
// turn.
func (p *Publisher) DeadLetterStored(rec *dlq.Record) {
	if envelope.IsOpsType(rec.EventType) {
		return
	}
	data := map[string]any{
		"sink": rec.Sink, "reason": string(rec.Reason), "attempts": rec.Attempts, "replays": rec.Replays,
		"event_id": rec.EventID, "event_type": rec.EventType,
		"first_attempt": rec.FirstAttempt.UTC().Format(time.RFC3339Nano),
		"last_attempt":  rec.LastAttempt.UTC().Format(time.RFC3339Nano),
	}
	if rec.Status != 0 {
		data["status"] = rec.Status
	}
	if rec.Code != "" {
		data["code"] = rec.Code
	}
	if rec.Error != "" {
		data["error"] = clip(rec.Error, 1024)
	}
	p.emit(envelope.TypeOpsDeadLettered, rec.Sink, "chapar-ops-dl-"+rec.Key(), data)
}

// OperatorPaused publishes chapar.ops.sink_paused or sink_resumed. Every
// replica applies the same record: its revision names the event, so the
// deployment stores one.
func (p *Publisher) OperatorPaused(sink string, rec topology.OperatorPause, revision uint64) {
	typ := envelope.TypeOpsSinkResumed
	if rec.Paused {
		typ = envelope.TypeOpsSinkPaused
	}
	data := map[string]any{"sink": sink, "by": rec.By, "revision": revision}
	if !rec.At.IsZero() {
		data["at"] = rec.At.UTC().Format(time.RFC3339Nano)
	}
	id := ""
	if revision != 0 {
		sum := sha256.Sum256(fmt.Appendf(nil, "%s/%s/%d/%s", typ, sink, revision, p.topo.PausesBucket()))
		id = "chapar-ops-pause-" + hex.EncodeToString(sum[:12])
	}
	p.emit(typ, sink, id, data)
}

// BreakerChanged publishes chapar.ops.breaker_opened when a sink's
// breaker opens, and breaker_closed when it closes again (each replica
// has its own breaker and reports it).
func (p *Publisher) BreakerChanged(sink string, to retry.State) {
	s := p.sinks[sink]
	if s == nil {
		return
	}
	now := time.Now()
	s.mu.Lock()
	from := s.breaker
	s.breaker = to
	var typ string
	data := map[string]any{"sink": sink}
	switch {
	case to == gobreaker.StateOpen && from != gobreaker.StateOpen:
		if s.opened.IsZero() {
			s.opened = now
		}
		s.tripped = true
		typ = envelope.TypeOpsBreakerOpened
		data["failures"] = s.failures.Load()
		if s.lastErr != "" {
			data["last_error"] = s.lastErr
		}
	case to == gobreaker.StateClosed && from != gobreaker.StateClosed:
		typ = envelope.TypeOpsBreakerClosed
		if !s.opened.IsZero() {
			data["opened_at"] = s.opened.UTC().Format(time.RFC3339Nano)
			data["open_seconds"] = now.Sub(s.opened).Seconds()
		}
		s.opened = time.Time{}
	}
	s.mu.Unlock()
	if typ != "" {
		p.emit(typ, sink, "", data)
	}
}

// VendorRequest counts a sink's failed requests in a row and publishes
// chapar.ops.sink_recovered at the first success after recoveredAfter of
// them, unless the breaker opened meanwhile (breaker_closed says it).
// A success with no failures before is one atomic load.
func (p *Publisher) VendorRequest(sink string, _ time.Duration, err error) {
	s := p.sinks[sink]
	if s == nil {
		return
	}
	if err == nil {
		if s.failures.Load() == 0 {
			return
		}
		n := s.failures.Swap(0)
		s.mu.Lock()
		since, lastErr, tripped := s.since, s.lastErr, s.tripped
		s.tripped = false
		s.mu.Unlock()
		if n < recoveredAfter || tripped {
			return
		}
		p.emit(envelope.TypeOpsSinkRecovered, sink, "", map[string]any{
			"sink": sink, "failures": n, "last_error": lastErr,
			"failing_since": since.UTC().Format(time.RFC3339Nano), "failing_seconds": time.Since(since).Seconds(),
		})
		return
	}
	first := s.failures.Add(1) == 1
	s.mu.Lock()
	if first {
		s.since = time.Now()
	}
	s.lastErr = clip(err.Error(), 512)
	s.mu.Unlock()
}

// ConsumerLost and ConsumerBack publish chapar.ops.consumer_recreated
// when a sink's consumer found gone exists again (heal.go).
func (p *Publisher) ConsumerLost(sink string) {
	if s := p.sinks[sink]; s != nil {
		s.mu.Lock()
		s.lost = append(s.lost, time.Now())
		s.mu.Unlock()
	}
}

func (p *Publisher) ConsumerBack(sink string) {
	s := p.sinks[sink]
	if s == nil {
		return
	}
	data := map[string]any{"sink": sink}
	s.mu.Lock()
	if len(s.lost) > 0 {
		data["lost_at"] = s.lost[0].UTC().Format(time.RFC3339Nano)
		data["down_seconds"] = time.Since(s.lost[0]).Seconds()
		s.lost = s.lost[1:]
	}
	s.mu.Unlock()
	p.emit(envelope.TypeOpsConsumerHealed, sink, "", data)
}

// The rest of dispatch.Observer says nothing an ops event reports.
func (p *Publisher) Received()                                {}
func (p *Publisher) Unrouted(string, string)                  {}
func (p *Publisher) FilterFailed(string)                      {}
func (p *Publisher) Delivered(string, time.Duration)          {}
func (p *Publisher) Retried(string, int)                      {}
func (p *Publisher) DeadLettered(string, string, int, string) {}
func (p *Publisher) InFlight(string, int)                     {}
func (p *Publisher) Unsettled(string, int)                    {}
func (p *Publisher) Panicked(string)                          {}
func (p *Publisher) RateLimit(string, float64)                {}
func (p *Publisher) SinkFenced(string, bool)                  {}
func (p *Publisher) SinkPaused(string, bool)                  {}

// PublishReplayDone publishes chapar.ops.replay_done for a replay job
// (dispatcher dlq replay, the console's jobs): once, now, under
// publishTimeout, not rate-limited. sink is the filter's sink ("" for a
// replay of every sink).
func PublishReplayDone(ctx context.Context, js jetstream.JetStream, cfg *config.Config, sink, by string, res dlq.ReplayResult, jobErr error) error {
	data := map[string]any{"matched": res.Matched, "replayed": res.Replayed, "skipped": res.Skipped}
	return publishJobDone(ctx, js, cfg, envelope.TypeOpsReplayDone, sink, by, data, jobErr)
}

// PublishRedeliveryDone publishes a chapar.ops.redelivery_done for a
// redelivery (dispatcher sinks redeliver, a console job) that ended,
// when ops_events.enabled; nothing for a dry run.
func PublishRedeliveryDone(ctx context.Context, js jetstream.JetStream, cfg *config.Config, sink, by string, res redeliver.Result, jobErr error) error {
	if !cfg.OpsEvents.Enabled {
		return nil
	}
	data := map[string]any{"job": res.Job, "scanned": res.Scanned, "matched": res.Matched, "sent": res.Sent,
		"since": res.Since.UTC(), "until": res.Until.UTC()}
	if !res.Resume.IsZero() {
		data["resume"] = res.Resume.UTC()
	}
	return publishJobDone(ctx, js, cfg, envelope.TypeOpsRedeliveryDone, sink, by, data, jobErr)
}

// publishJobDone publishes a job's end: data, with by, the sink (absent:
// every sink) and the error it stopped on.
func publishJobDone(ctx context.Context, js jetstream.JetStream, cfg *config.Config, typ, sink, by string, data map[string]any, jobErr error) error {
	topo := topology.New(cfg.Streams)
	data["by"] = by
	if sink != "" {
		data["sink"] = sink
	}
	if jobErr != nil {
		data["error"] = clip(jobErr.Error(), 512)
	}
	host, _ := os.Hostname()
	opts := []envelope.Option{envelope.WithTime(time.Now())}
	if sink != "" {
		opts = append(opts, envelope.WithSubject(sink))
	}
	env, err := envelope.New(typ, "chapar://"+by+"/"+host, data, opts...)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, publishTimeout)
	defer cancel()
	pub := envelope.NewPublisher(js, envelope.WithSubjectPrefix(cfg.Streams.SubjectPrefix),
		envelope.WithPartitions(topo.Partitions()), envelope.WithMaxBytes(topo.MaxEnvelopeBytes()))
	_, err = pub.Publish(pctx, env)
	return err
}

// clip makes a vendor's or a broker's text fit an envelope's data: valid
// UTF-8 without NUL (what Parse refuses), at most n bytes.
func clip(s string, n int) string {
	return strings.ReplaceAll(envelope.Clip(s, n), "\x00", "\uFFFD")
}

// Store is a dead-letter store whose replays are followed by a
// chapar.ops.replay_done, when ops_events.enabled: what dispatcher dlq
// replay and the console's replay jobs run, so both report the same way.
// A dry run, or a replay that matched nothing and failed in nothing,
// reports nothing. A report that cannot be published is passed to warn
// and changes nothing of the replay's result.
type Store struct {
	*dlq.Store
	js   jetstream.JetStream
	cfg  *config.Config
	by   string
	warn func(error)
}

// NewStore wraps st; by names who replays (cli, console).
func NewStore(st *dlq.Store, js jetstream.JetStream, cfg *config.Config, by string, warn func(error)) *Store {
	return &Store{Store: st, js: js, cfg: cfg, by: by, warn: warn}
}

// Replay runs the replay (dlq.Store.Replay), then reports it.
func (s *Store) Replay(ctx context.Context, f dlq.Filter, o dlq.ReplayOptions) (dlq.ReplayResult, error) {
	res, err := s.Store.Replay(ctx, f, o)
	if o.DryRun || !s.cfg.OpsEvents.Enabled || res.Matched == 0 && err == nil {
		return res, err
	}
	if perr := PublishReplayDone(context.WithoutCancel(ctx), s.js, s.cfg, f.Sink, s.by, res, err); perr != nil && s.warn != nil {
		s.warn(fmt.Errorf("chapar.ops.replay_done not published: %w", perr))
	}
	return res, err
}
