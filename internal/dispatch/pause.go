package dispatch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/topology"
)

// A vendor's Retry-After throttles the account, so it pauses the sink in
// every replica, not only in the one that was told. The pause is shared
// through the broker: one key per sink in the pauses bucket
// (topology.PausesBucket), holding a pauseRecord. Every replica reads the
// key at start and watches it, so a replica started during a pause learns
// it; every write is a compare-and-set on the key's revision.
//
// After the pause exactly one request goes to the vendor from the whole
// deployment, the probe. Its sender is chosen by the revision race: each
// replica about to send its first request after the pause writes a claim
// (itself as prober, with a lease); the write that wins is the probe, the
// others read the winner's claim and wait for its result: a longer pause
// (the probe was throttled again), a resumption (it was answered
// otherwise: every replica ramps up from one request), or the lease's end
// (the prober died or hung: another claims). The claim is taken by the
// replica that actually has a request to send, not by whoever wrote the
// pause, which may hold no message when the pause ends (a throttled
// event's retry is taken by any replica).
//
// The broker is never in delivery's way: the local pause applies at once
// and the write follows (coalesced, in the background, with a deadline);
// a claim that cannot be written in claimTimeout lets the request go as
// this replica's own probe; a watch that breaks is re-established. Without
// the broker a replica honours the pauses it was given, as before.

// pauseRecord is a sink's shared pause. Times are the writer's clock;
// readers correct for skew with the broker's timestamp (viewOf).
type pauseRecord struct {
	// Until is when the vendor may be asked again.
	Until time.Time `json:"until"`
	// Written is when the record was written, so a reader can tell how
	// much of the pause (or lease) was left at that moment.
	Written time.Time `json:"written"`
	// Prober is the replica whose request is the probe after the pause,
	// until ProbeUntil.
	Prober     string    `json:"prober,omitempty"`
	ProbeUntil time.Time `json:"probe_until,omitempty"`
	// Resumed says the probe was answered without a new pause: every
	// replica may send again, starting from one request (the ramp).
	Resumed bool `json:"resumed,omitempty"`
}

// extendPause is the record after a replica was told to wait until until.
// Pauses only extend: a shorter or equal one writes nothing. A longer one
// replaces any claim (its probe is out before the pause, so its result
// decides nothing) and any resumption.
func extendPause(cur pauseRecord, until, now time.Time) (pauseRecord, bool) {
	if !until.After(cur.Until) {
		return cur, false
	}
	return pauseRecord{Until: until, Written: now}, true
}

// claimVerdict is what a replica about to send its first request after a
// pause does.
type claimVerdict int

const (
	// claimWrite: write the returned record; if the write wins the
	// revision race, this request is the probe.
	claimWrite claimVerdict = iota
	// claimWait: the deployment's pause is not over, or another replica's
	// probe is out: wait (the record says until when).
	claimWait
	// claimNone: the pause was resolved (resumed): send, no probe needed.
	claimNone
)

// resumedCovers is how much later than a resumed record's pause this
// replica's own pause may end and still be the same pause (each replica
// measures it on its own clock and from its own answer).
const resumedCovers = time.Second

// claimProbe decides a claim from the current record (have: the key
// exists). localUntil is when this replica's own view of the pause ended;
// lease is how long the probe may take before another replica may claim.
func claimProbe(cur pauseRecord, have bool, me string, localUntil, now time.Time, lease time.Duration) (pauseRecord, claimVerdict) {
	if have {
		switch {
		case cur.Until.After(now):
			return cur, claimWait
		case cur.Prober != "" && cur.Prober != me && cur.ProbeUntil.After(now):
			return cur, claimWait
		case cur.Resumed && !cur.Until.Add(resumedCovers).Before(localUntil):
			return cur, claimNone
		}
	}
	// No record (this replica's pause was never shared: the write
	// failed), a lapsed or released claim, or our own: claim. Until keeps
	// the later of the two pauses, so the record says which it resolves.
	next := pauseRecord{Until: cur.Until, Written: now, Prober: me, ProbeUntil: now.Add(lease)}
	if localUntil.After(next.Until) {
		next.Until = localUntil
	}
	return next, claimWrite
}

// finishProbe is the record after this replica's probe ended: answered
// (resumed: every replica ramps up), or not made at all (released: another
// may claim). A record no longer naming this replica (a longer pause came
// meanwhile) is left alone. A probe throttled again is not finished here:
// the pause it was given replaces the claim (extendPause).
func finishProbe(cur pauseRecord, have bool, me string, answered bool, now time.Time) (pauseRecord, bool) {
	if !have || cur.Prober != me {
		return cur, false
	}
	return pauseRecord{Until: cur.Until, Written: now, Resumed: answered}, true
}

// pauseView is what a record means to one replica's gate, on its clock.
type pauseView struct {
	until     time.Time // no request before this
	heldUntil time.Time // another replica's probe is out until then (zero: none)
	resumed   bool
}

// viewOf reads a record on this replica's clock. A record's times are the
// writer's; the broker stamped the write (created), and a record seen
// live (watched, not read at start) arrived just now (received). Each
// gives an estimate of the end; the latest is taken, so a skewed clock
// lengthens a pause, never shortens it.
func viewOf(r pauseRecord, me string, created, received time.Time, live bool) pauseView {
	latest := func(at time.Time) time.Time {
		left := at.Sub(r.Written)
		end := at
		if e := created.Add(left); e.After(end) {
			end = e
		}
		if e := received.Add(left); live && e.After(end) {
			end = e
		}
		return end
	}
	v := pauseView{until: latest(r.Until), resumed: r.Resumed}
	if r.Prober != "" && r.Prober != me {
		v.heldUntil = latest(r.ProbeUntil)
	}
	return v
}

// sharedPause is one sink's pause key, as one replica sees and writes it.
type sharedPause struct {
	key   string
	me    string
	lease time.Duration
	log   *zap.Logger
	learn func(pauseView) // the gate's
	// broken tells the board a call failed (the bucket may be gone): it
	// binds the bucket again.
	broken func()

	mu sync.Mutex
	// kv is the pauses bucket, nil until the board has bound it: until
	// then the pauses are this replica's own.
	kv   jetstream.KeyValue
	cur  pauseRecord // the latest record seen or written
	rev  uint64      // its revision; 0: none seen
	have bool
	// createdAt is when the broker stored cur (its clock).
	createdAt time.Time
	// Writes waiting for the writer (run): the longest pause asked for,
	// and the end of this replica's probe.
	wantUntil time.Time
	finish    *bool // answered; nil: none
	kick      chan struct{}
}

// Deadlines of the pause's broker calls: a claim is on the path of a
// request, a write is not.
const (
	claimTimeout = time.Second
	writeTimeout = 2 * time.Second
)

func newSharedPause(sink, me string, lease time.Duration, log *zap.Logger) *sharedPause {
	return &sharedPause{key: sink, me: me, lease: lease, log: log, kick: make(chan struct{}, 1)}
}

// bind gives the pause its bucket, and writes what waited for it. What
// was read from a bucket before is forgotten: a bucket deleted and made
// again starts its revisions anew.
func (s *sharedPause) bind(kv jetstream.KeyValue) {
	s.mu.Lock()
	s.kv = kv
	s.cur, s.rev, s.have, s.createdAt = pauseRecord{}, 0, false, time.Time{}
	s.mu.Unlock()
	s.poke()
}

func (s *sharedPause) bucket() jetstream.KeyValue {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.kv
}

// extend shares a pause this replica was given (it already applies here).
func (s *sharedPause) extend(until time.Time) {
	s.mu.Lock()
	if until.After(s.wantUntil) {
		s.wantUntil = until
	}
	s.mu.Unlock()
	s.poke()
}

// finished shares the end of this replica's probe.
func (s *sharedPause) finished(answered bool) {
	s.mu.Lock()
	s.finish = &answered
	s.mu.Unlock()
	s.poke()
}

func (s *sharedPause) poke() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// run writes what extend and finished asked for until ctx ends, coalesced:
// a burst of throttled answers is one write.
func (s *sharedPause) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		}
		s.mu.Lock()
		if s.kv == nil { // kept for when the bucket is bound
			s.mu.Unlock()
			continue
		}
		until, finish := s.wantUntil, s.finish
		s.wantUntil, s.finish = time.Time{}, nil
		s.mu.Unlock()
		// The probe's end first: a pause asked for after it must stand.
		if finish != nil {
			answered := *finish
			if err := s.update(ctx, func(cur pauseRecord, have bool, now time.Time) (pauseRecord, bool) {
				return finishProbe(cur, have, s.me, answered, now)
			}); err != nil {
				s.log.Warn("could not tell the other replicas that the probe after a pause ended; they wait for its lease",
					zap.String("sink", s.key), zap.Error(err))
			}
		}
		if !until.IsZero() {
			if err := s.update(ctx, func(cur pauseRecord, have bool, now time.Time) (pauseRecord, bool) {
				return extendPause(cur, until, now)
			}); err != nil {
				s.log.Warn("could not share a Retry-After pause with the other replicas; only this one pauses",
					zap.String("sink", s.key), zap.Time("until", until), zap.Error(err))
			}
		}
	}
}

// update writes next(current) by compare-and-set, re-reading on a lost
// race, within writeTimeout.
func (s *sharedPause) update(ctx context.Context, next func(pauseRecord, bool, time.Time) (pauseRecord, bool)) error {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	for range 5 {
		cur, rev, have := s.latest()
		rec, write := next(cur, have, time.Now())
		if !write {
			return nil
		}
		err := s.write(ctx, rec, rev, have)
		if !errors.Is(err, errLostRace) {
			return err
		}
		if err := s.refresh(ctx); err != nil {
			return err
		}
	}
	return errors.New("pause key contended: 5 writes lost in a row")
}

// claimResult is a claim's outcome for the gate.
type claimResult struct {
	verdict claimVerdict // claimWrite: won, this request is the probe
	view    pauseView    // claimWait: what to wait for
}

// claim asks to make the probe after a pause that ended here at
// localUntil. An error says the broker could not be asked in time.
func (s *sharedPause) claim(ctx context.Context, localUntil time.Time) (claimResult, error) {
	if s.bucket() == nil {
		return claimResult{}, errNotShared
	}
	ctx, cancel := context.WithTimeout(ctx, claimTimeout)
	defer cancel()
	for range 5 {
		cur, rev, have := s.latest()
		now := time.Now()
		rec, v := claimProbe(cur, have, s.me, localUntil, now, s.lease)
		switch v {
		case claimNone:
			return claimResult{verdict: claimNone}, nil
		case claimWait:
			// Read on this replica's clock: the record may be one we
			// only just read, not yet applied.
			return claimResult{verdict: claimWait, view: viewOf(rec, s.me, s.created(), now, false)}, nil
		}
		err := s.write(ctx, rec, rev, have)
		if err == nil {
			return claimResult{verdict: claimWrite}, nil
		}
		if !errors.Is(err, errLostRace) {
			return claimResult{}, err
		}
		if err := s.refresh(ctx); err != nil {
			return claimResult{}, err
		}
	}
	return claimResult{}, errors.New("pause key contended: 5 claims lost in a row")
}

// errNotShared: the pauses bucket is not bound yet (the broker did not
// answer at start); the pauses are this replica's own meanwhile.
var errNotShared = errors.New("the pauses bucket is not bound yet")

// errLostRace: another replica wrote the key first.
var errLostRace = errors.New("lost the revision race")

// write stores rec if the key is still at rev (absent, if !have).
func (s *sharedPause) write(ctx context.Context, rec pauseRecord, rev uint64, have bool) error {
	raw, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	kv := s.bucket()
	var newRev uint64
	if have {
		newRev, err = kv.Update(ctx, s.key, raw, rev)
	} else {
		newRev, err = kv.Create(ctx, s.key, raw)
	}
	switch {
	case errors.Is(err, jetstream.ErrKeyExists), errors.Is(err, jetstream.ErrKeyRevisionMismatch):
		return errLostRace
	case err != nil:
		s.failed()
		return fmt.Errorf("pause key %s: %w", s.key, err)
	}
	s.store(rec, newRev, true, time.Now())
	return nil
}

// refresh reads the key after a lost race, and lets the gate learn it.
func (s *sharedPause) refresh(ctx context.Context) error {
	e, err := s.bucket().Get(ctx, s.key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		s.mu.Lock()
		s.have = false
		s.mu.Unlock()
		return nil
	case err != nil:
		s.failed()
		return fmt.Errorf("pause key %s: %w", s.key, err)
	}
	s.observe(e, false)
	return nil
}

// observe takes an entry read or watched, and tells the gate what it means.
// Older revisions than the one held are ignored: a watch may deliver what
// this replica already read or wrote.
func (s *sharedPause) observe(e jetstream.KeyValueEntry, live bool) {
	var rec pauseRecord
	have := e.Operation() == jetstream.KeyValuePut
	if have {
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			s.log.Warn("unreadable pause record; ignored", zap.String("sink", s.key), zap.Error(err))
			return
		}
	}
	if !s.store(rec, e.Revision(), have, e.Created()) {
		return
	}
	if s.learn == nil {
		return
	}
	if !have { // deleted by hand: nothing to wait for
		s.learn(pauseView{})
		return
	}
	s.learn(viewOf(rec, s.me, e.Created(), time.Now(), live))
}

// store keeps rec as the latest if rev is newer than the one held.
func (s *sharedPause) store(rec pauseRecord, rev uint64, have bool, created time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev <= s.rev {
		return false
	}
	s.cur, s.rev, s.have, s.createdAt = rec, rev, have, created
	return true
}

func (s *sharedPause) failed() {
	if s.broken != nil {
		s.broken()
	}
}

func (s *sharedPause) latest() (pauseRecord, uint64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur, s.rev, s.have
}

func (s *sharedPause) created() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.createdAt
}

// pauseBoard is one dispatcher's view of the pauses bucket: a sharedPause
// per sink, one watcher for all of them.
type pauseBoard struct {
	topo   topology.Topology
	js     jetstream.JetStream
	kv     jetstream.KeyValue // once bound
	log    *zap.Logger
	pauses map[string]*sharedPause
	// held applies an operator's pause (or resumption) of a sink
	// (operator.go), by sink.
	held map[string]func(rec topology.OperatorPause, revision uint64)
	// rebind asks for the bucket to be bound again (sharedPause.broken).
	rebind chan struct{}
}

func newPauseBoard(topo topology.Topology, js jetstream.JetStream, log *zap.Logger) *pauseBoard {
	return &pauseBoard{topo: topo, js: js, log: log, pauses: map[string]*sharedPause{}, held: map[string]func(topology.OperatorPause, uint64){},
		rebind: make(chan struct{}, 1)}
}

// add makes a sink's shared pause part of the board.
func (b *pauseBoard) add(s *sharedPause) {
	s.broken = func() {
		select {
		case b.rebind <- struct{}{}:
		default:
		}
	}
	b.pauses[s.key] = s
}

// Deadlines of the board's start: creating the bucket, creating the
// watch, and reading the current pauses before the sink's consumers start.
const (
	bucketTimeout  = 10 * time.Second
	watchTimeout   = 5 * time.Second
	startReadLimit = 2 * time.Second
)

// run binds the bucket (creating it if need be), watches it until ctx
// ends, and runs each sink's writer. It closes ready once the current
// records are read, or after startReadLimit: a replica starting during a
// pause learns it before it pulls, and a broker that does not answer (a
// cluster still forming) delays the start only so long; the bucket is
// bound when it answers. The watch is re-established if it breaks.
func (b *pauseBoard) run(ctx context.Context, ready chan<- struct{}) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, s := range b.pauses {
		wg.Go(func() { s.run(ctx) })
	}
	var once sync.Once
	markReady := func() bool {
		done := false
		once.Do(func() { close(ready); done = true })
		return done
	}
	defer markReady()
	startLimit := time.AfterFunc(startReadLimit, func() {
		if markReady() {
			b.log.Warn("the deployment's pauses not read in time; starting without them", zap.Duration("waited", startReadLimit))
		}
	})
	defer startLimit.Stop()
	for ctx.Err() == nil {
		// (Re)bound at each watch: a bucket deleted by hand is made again.
		if !b.bind(ctx) {
			return
		}
		if err := b.watch(ctx, markReady); err != nil && ctx.Err() == nil {
			b.log.Warn("watching the deployment's pauses failed; retrying", zap.Error(err))
			_ = sleep(ctx, time.Second, nil)
		}
	}
}

// bind creates or binds the pauses bucket, retrying until ctx ends, and
// gives it to every sink's pause. It reports false if ctx ended first.
func (b *pauseBoard) bind(ctx context.Context) bool {
	wait := 250 * time.Millisecond
	for {
		bctx, cancel := context.WithTimeout(ctx, bucketTimeout)
		kv, err := b.topo.EnsurePauses(bctx, b.js)
		cancel()
		if err == nil {
			b.kv = kv
			for _, s := range b.pauses {
				s.bind(kv)
			}
			return true
		}
		b.log.Warn("the pauses bucket is not ready; each replica honours its own pauses meanwhile",
			zap.Duration("next_try", wait), zap.Error(err))
		if sleep(ctx, wait, nil) != nil {
			return false
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// pausesCheckEvery is how often a watch of the pauses bucket checks that
// the bucket it follows is still there and that it is not behind.
const pausesCheckEvery = 5 * time.Second

// bucketState is when the pauses bucket's stream was created and its last
// revision, read within writeTimeout.
func (b *pauseBoard) bucketState(ctx context.Context) (created time.Time, last uint64, err error) {
	ctx, cancel := context.WithTimeout(ctx, writeTimeout)
	defer cancel()
	st, err := b.kv.Status(ctx)
	if err != nil {
		return time.Time{}, 0, err
	}
	bs, ok := st.(*jetstream.KeyValueBucketStatus)
	if !ok {
		return time.Time{}, 0, errors.New("pauses bucket status of an unknown kind")
	}
	info := bs.StreamInfo()
	return info.Created, info.State.LastSeq, nil
}

// watch follows the bucket until the watch ends.
func (b *pauseBoard) watch(ctx context.Context, initialized func() bool) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The watch lives as long as wctx; only its creation has a deadline.
	created := make(chan struct{})
	go func() {
		select {
		case <-created:
		case <-time.After(watchTimeout):
			cancel()
		}
	}()
	w, err := b.kv.WatchAll(wctx)
	close(created)
	if err != nil {
		return fmt.Errorf("watch pauses: %w", err)
	}
	defer func() { _ = w.Stop() }()
	// A watch is push, and one can die without a word: the bucket deleted
	// (and perhaps made again by a sinks pause) leaves it waiting on a
	// stream that is gone. So the bucket is looked at every
	// pausesCheckEvery; a bucket gone or made anew, or a watch that lags
	// the bucket at two checks in a row, ends this watch, and run binds
	// and watches again, reading every current record.
	check := time.NewTicker(pausesCheckEvery)
	defer check.Stop()
	var seen uint64   // the highest revision this watch delivered
	var lagged uint64 // the bucket's last revision at the last check, if it was ahead
	// When the bucket's stream was created, read as the watch begins (or
	// at the first check that could).
	made, _, _ := b.bucketState(ctx)
	live := false
	// The operator pauses among the current values: a sink without one
	// (never paused, or its key deleted by hand, or the bucket made
	// again) is not paused once they are all read.
	opSeen := map[string]bool{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-b.rebind:
			// A call failed: the watch of a deleted bucket does not end
			// by itself.
			return errors.New("a call on the pauses bucket failed")
		case <-check.C:
			created, last, err := b.bucketState(ctx)
			switch {
			case errors.Is(err, jetstream.ErrBucketNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
				return fmt.Errorf("the pauses bucket is gone: %w", err)
			case err != nil:
				continue // unknown: the next check will tell
			case !made.IsZero() && !created.Equal(made):
				return errors.New("the pauses bucket was made anew")
			case last > seen && lagged > seen:
				return fmt.Errorf("the watch of the pauses lags the bucket (revision %d delivered, %d stored)", seen, last)
			}
			made, lagged = created, 0
			if last > seen {
				lagged = last
			}
		case e, ok := <-w.Updates():
			if !ok {
				return errors.New("watch of the pauses ended")
			}
			if e == nil { // the current values are all read
				live = true
				for sink, apply := range b.held {
					if !opSeen[sink] {
						apply(topology.OperatorPause{}, 0)
					}
				}
				initialized()
				continue
			}
			seen = max(seen, e.Revision())
			if sink, ok := topology.OperatorPauseSink(e.Key()); ok {
				opSeen[sink] = true
				b.operatorPause(sink, e)
				continue
			}
			if s := b.pauses[e.Key()]; s != nil {
				s.observe(e, live)
			}
		}
	}
}
