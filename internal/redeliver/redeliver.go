package redeliver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Pacer paces the re-sends: *rate.Limiter, built from the sink's
// rate_limit (Limiter), or a test's counter.
type Pacer interface {
	Wait(ctx context.Context) error
}

// Options are one redelivery.
type Options struct {
	// Sink is the one sink that gets the events again.
	Sink string
	// Routes are the deployment's current routes (the config's).
	Routes []config.Route
	Filter Filter
	// DryRun counts and samples what would be re-sent; nothing is.
	DryRun bool
	// Pace, if set, is waited on before each re-send.
	Pace Pacer
	// Limit re-sends at most this many (0: the whole window).
	Limit int
	// Progress, if set, is called after each event re-sent (or, in a dry
	// run, matched), with the result so far.
	Progress func(Result)
	// Job names the redelivery (NewJobID if empty): the marker its
	// messages carry, and part of their de-duplication keys.
	Job string
}

// Event is one event of the window, as a sample shows it.
type Event struct {
	ID        string    `json:"id"`
	Type      string    `json:"type"`
	Name      string    `json:"name"`
	Subject   string    `json:"subject,omitempty"`
	Stored    time.Time `json:"stored"`
	Partition int       `json:"partition"`
	Seq       uint64    `json:"seq"`
}

// Result says what a redelivery did (or, for a dry run, would do).
type Result struct {
	Job string `json:"job"`
	// Scanned counts the window's events read.
	Scanned int `json:"scanned"`
	// Matched counts those the sink is to get again.
	Matched int `json:"matched"`
	// Sent counts those published to the sink's retry-due subject.
	Sent int `json:"sent"`
	// Filtered are left out by the type, name or subject filters;
	// NotRouted by the sink's routes (see Filter.All); Invalid do not
	// parse as envelopes (they were dead-lettered when they arrived).
	Filtered  int     `json:"filtered"`
	NotRouted int     `json:"not_routed"`
	Invalid   int     `json:"invalid"`
	Sample    []Event `json:"sample,omitempty"`
	// Since is the window's start.
	Since time.Time `json:"since"`
	// Until is the window's end as used (the job's start when none was
	// given).
	Until time.Time `json:"until"`
	// Next, set when a job stopped before the window's end, is the first
	// event it did not handle, if it was read.
	Next *Event `json:"next,omitempty"`
	// Resume, set when a job stopped before the window's end, is the
	// --since that goes on from there without missing an event: Next's
	// time, or (a read failed) the last handled event's. Events stored
	// in that same nanosecond and already sent are sent again; the
	// vendor's idempotency key, where it has one, makes that harmless.
	Resume time.Time `json:"resume,omitzero"`
	// Reached is the stored time of the last event handled (sent or
	// left out): how far through the window the job is.
	Reached time.Time `json:"reached,omitzero"`
}

// sampleSize is how many matching events a result keeps to show.
const sampleSize = 5

// publishWait bounds each wait for JetStream to confirm a re-send.
const publishWait = 10 * time.Second

// NewJobID names a redelivery: a token a subject can hold (retry keys
// carry it).
func NewJobID() (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("redeliver: job id: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Validate says what in the filter cannot be, naming the flag.
func (f Filter) Validate() error {
	switch {
	case f.Since.IsZero():
		return errors.New("since: a redelivery needs the window's start (RFC 3339, or a duration ago like 2h)")
	case !f.Until.IsZero() && f.Until.Before(f.Since):
		return fmt.Errorf("until: %s is before --since %s", f.Until.Format(time.RFC3339), f.Since.Format(time.RFC3339))
	}
	if _, err := path.Match(f.Name, ""); err != nil {
		return fmt.Errorf("name: %q is not a name or pattern: %w", f.Name, err)
	}
	return nil
}

// Limiter is the sink's rate_limit as a pacer (nil: no limit): a
// redelivery sends no faster than the sink may deliver, so it neither
// floods the sink's queue nor starves its live events of the vendor's
// quota for long.
func Limiter(rl *config.RateLimit) Pacer {
	if rl == nil || rl.PerSecond <= 0 {
		return nil
	}
	return rate.NewLimiter(rate.Limit(rl.PerSecond), max(rl.Burst, 1))
}

// Run re-sends the window's matching events to o.Sink, in the order they
// were stored. Stopped early (its context ended, a broker error), it
// returns what it did with Next set, and the error.
func Run(ctx context.Context, js jetstream.JetStream, topo topology.Topology, o Options) (Result, error) {
	res := Result{Job: o.Job, Since: o.Filter.Since, Until: o.Filter.Until}
	if err := o.Filter.Validate(); err != nil {
		return res, err
	}
	if !envelope.IsSinkName(o.Sink) {
		return res, fmt.Errorf("redeliver: %q is not a sink name", o.Sink)
	}
	if res.Job == "" {
		var err error
		if res.Job, err = NewJobID(); err != nil {
			return res, err
		}
	} else if !envelope.IsSinkName(res.Job) {
		return res, fmt.Errorf("redeliver: job %q: use lower-case letters, digits, - or _", res.Job)
	}
	if res.Until.IsZero() {
		res.Until = time.Now()
	}
	if !o.DryRun {
		// Without the sink's retry consumer, what is re-sent would wait
		// in the retries stream for a dispatcher that never comes.
		hctx, cancel := context.WithTimeout(ctx, readWait)
		ok, err := topo.HasSink(hctx, js, o.Sink)
		cancel()
		if err != nil {
			return res, fmt.Errorf("redeliver: %w", err)
		}
		if !ok {
			return res, fmt.Errorf("redeliver: no dispatcher has run sink %s against this NATS: there is no queue to re-send to", o.Sink)
		}
	}
	m, err := open(ctx, js, topo, o.Filter.Since, res.Until)
	if err != nil {
		return res, err
	}
	defer m.close()
	routes, err := dispatch.NewRoutes(o.Routes)
	if err != nil {
		return res, fmt.Errorf("redeliver: %w", err)
	}
	for o.Limit == 0 || res.Matched < o.Limit {
		p, s, err := m.next(ctx)
		if err != nil {
			return stopped(res, nil), err
		}
		if s == nil {
			return res, nil
		}
		res.Scanned++
		res.Reached = s.at
		ev, perr := envelope.ParseMessage(s.header, s.data, topo.MaxEnvelopeBytes())
		var why string
		if perr == nil {
			why = o.Filter.decide(routes, o.Sink, ev)
		}
		switch {
		case perr != nil:
			res.Invalid++
		case why == skipFiltered:
			res.Filtered++
		case why == skipNotRoute:
			res.NotRouted++
		default:
			if !o.DryRun {
				if err := send(ctx, js, topo, o, res.Job, s, o.Pace); err != nil {
					return stopped(res, describe(s, ev)), err
				}
				res.Sent++
			}
			res.Matched++
			if len(res.Sample) < sampleSize {
				res.Sample = append(res.Sample, *describe(s, ev))
			}
			if o.Progress != nil {
				o.Progress(res)
			}
		}
		p.pop()
	}
	// Stopped at the limit: say where the rest begins, if any.
	_, s, err := m.next(ctx)
	if err != nil {
		return res, err
	}
	if s != nil {
		res = stopped(res, describe(s, nil))
	}
	return res, nil
}

// stopped marks res as ended before the window's end, before next (nil:
// not known, a read failed).
func stopped(res Result, next *Event) Result {
	res.Next = next
	switch {
	case next != nil:
		res.Resume = next.Stored
	case !res.Reached.IsZero():
		res.Resume = res.Reached
	default:
		res.Resume = res.Since
	}
	return res
}

// open starts a read of every partition's window.
func open(ctx context.Context, js jetstream.JetStream, topo topology.Topology, since, until time.Time) (*merge, error) {
	m := &merge{}
	for i, name := range topo.EventsStreams() {
		ictx, cancel := context.WithTimeout(ctx, readWait)
		st, err := js.Stream(ictx, name)
		cancel()
		if err != nil {
			m.close()
			return nil, fmt.Errorf("redeliver: open %s (has a dispatcher run against this NATS yet?): %w", name, err)
		}
		info := st.CachedInfo()
		if !info.Config.AllowDirect {
			m.close()
			return nil, fmt.Errorf("redeliver: %s does not allow direct gets: start a dispatcher of this version once (it updates the stream)", name)
		}
		p := &partition{nc: js.Conn(), stream: name, index: i, since: since, until: until, upTo: info.State.LastSeq}
		if info.State.Msgs == 0 || info.State.LastTime.Before(since) {
			p.done = true // nothing stored in the window
		} else if err := p.open(); err != nil {
			m.close()
			return nil, err
		}
		m.parts = append(m.parts, p)
	}
	return m, nil
}

// send publishes one event to the sink's retry-due subject, as a replay
// is: the producer's headers and the stored envelope unchanged, the
// event's origin and receipt time (so its retries and dead letter are
// keyed and dated as the event's own), and the job's marker.
func send(ctx context.Context, js jetstream.JetStream, topo topology.Topology, o Options, job string, s *stored, pace Pacer) error {
	origin, err := topology.OriginOf(s.stream, s.seq)
	if err != nil {
		return fmt.Errorf("redeliver: %w", err)
	}
	if pace != nil {
		if err := pace.Wait(ctx); err != nil {
			return fmt.Errorf("redeliver: stopped: %w", err)
		}
	}
	msg := nats.NewMsg(topo.RetryDueSubject(o.Sink))
	for k, v := range s.header {
		// Not JetStream's (the direct get's own, or a producer's
		// Nats-Expected-* that would fail the publish), not Chapar's
		// bookkeeping: a redelivery starts afresh.
		if strings.HasPrefix(k, "Nats-") || strings.HasPrefix(k, "Chapar-") {
			continue
		}
		msg.Header[k] = v
	}
	msg.Header.Set(topology.HeaderOrigin, strconv.FormatUint(origin, 10))
	msg.Header.Set(topology.HeaderReceived, s.at.UTC().Format(time.RFC3339Nano))
	msg.Header.Set(topology.HeaderRedelivery, job)
	msg.Data = s.data
	// Not cut by ctx: a re-send the server stored is counted as sent (a
	// stop while its confirmation is on its way said "re-sent 0" of one
	// the vendor had), and the command to go on begins after it.
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishWait)
	defer cancel()
	// The message id names (job, event): a publish retried after a lost
	// confirmation is stored once.
	if _, err := js.PublishMsg(pctx, msg, jetstream.WithMsgID("redeliver/"+job+"/"+strconv.FormatUint(origin, 10))); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("redeliver: stopped: %w", ctx.Err())
		}
		return fmt.Errorf("redeliver: re-send of %s #%d to %s: %w", s.stream, s.seq, o.Sink, err)
	}
	return nil
}

// describe is s as a sample shows it; ev may be nil (not parsed yet).
func describe(s *stored, ev *envelope.Event) *Event {
	if s == nil {
		return nil
	}
	e := &Event{Stored: s.at, Partition: s.partition, Seq: s.seq}
	if ev == nil {
		ev, _ = envelope.ParseMessage(s.header, s.data, 0)
	}
	if ev != nil {
		e.ID, e.Type, e.Name, e.Subject = ev.ID, ev.Type, ev.Name(), ev.Subject
	}
	return e
}
