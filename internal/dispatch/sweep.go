package dispatch

// A sink made the lead because the config dropped the old one: its
// consumer is widened where it stands (nats-server keeps a consumer's
// position when its filter changes), so what it had passed over outside
// its former filter, and what the old lead had not acked yet, would be
// checked by no one once the old lead is removed: an invalid envelope
// never dead-lettered, an event on a subject its sink does not read
// neither delivered nor dead-lettered. The new lead checks that once,
// from the stream, with direct gets (internal/jsread): from above the old
// leads' lowest ack floor to the stream's end at its bind. Every verdict
// is one the old lead, or any sink, reaches for the same event (a dead
// letter is stored once per event and sink), so a sweep that overlaps
// the old lead still running, or another replica's sweep, costs reads,
// never a second outcome.

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/jsread"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// leadSweep is one partition's part of what a sink made the lead checks
// of the old lead's backlog.
type leadSweep struct {
	partition int
	// from is the first stream sequence checked: above the lowest ack
	// floor of the leads the config dropped.
	from uint64
	// prior is what the sink's consumer read before it was made the lead:
	// what it read, it checked itself.
	prior topology.PriorRead
	// held says its consumer was held still from the read of prior to
	// the widening (topology.HoldForWidening), so that where it goes on
	// from, read then (topology.PassedTo), is where it passed over to.
	// Not held, its readers moved it meanwhile, delivering, and the read
	// of prior stands (what they passed over meanwhile goes unjudged: the
	// bind warns).
	held bool
	// unrecorded says prior.Delivered was moved at a bind whose write of
	// it to the floors bucket failed (a try cut short): a try after it
	// writes it again, though it finds nothing more to move.
	unrecorded bool
}

// leadSweeps are the sweeps a sink made the lead needs, per partition:
// none where its consumer read every subject already from at or below
// the old leads' lowest ack floor (one that starts above it never read
// what is below its start: that is swept, every subject), or where no lead
// the config dropped is on the server (then nothing says what is
// unchecked: docs/operations.md, "Removing the lead").
func leadSweeps(prior []topology.PriorRead, floors []uint64, found []bool) []leadSweep {
	var out []leadSweep
	for i, p := range prior {
		if (p.ReadsEverything() && p.Start <= floors[i]+1) || i >= len(found) || !found[i] {
			continue
		}
		out = append(out, leadSweep{partition: i, from: floors[i] + 1, prior: p})
	}
	return out
}

// withEarlier adds to the sweeps a bind's attempt read what an earlier
// attempt of the same bind found owed: the earlier attempt's widening,
// cut short, may have landed on the server after this attempt read the
// marks and before it read the consumers, which then read every subject
// though their narrow pulls passed over what the earlier attempt found
// owed. So on a partition this attempt owes nothing, the earlier sweep
// stands; and where this attempt's read is of a consumer reading every
// subject (it owes only what lies below its start) and the earlier one's
// was narrow, the earlier sweep, which checks all this one does and what
// the narrow pulls passed over, stands, from the lower of the two. An
// overlap costs reads only: a sink reaches its verdict on an event once.
func withEarlier(now, earlier []leadSweep) []leadSweep {
	for _, e := range earlier {
		i := slices.IndexFunc(now, func(n leadSweep) bool { return n.partition == e.partition })
		switch {
		case i < 0:
			now = append(now, e)
		case now[i].prior.ReadsEverything() && !e.prior.ReadsEverything():
			e.from = min(e.from, now[i].from)
			now[i] = e
		}
	}
	return now
}

// sweep checks what s covers, up to the partition's last event now (the
// sink is a lead already: what is stored later its consumer reads). A
// message that cannot be checked (the dead-letter stream down) is tried
// again until ctx ends. done says it reached its end; one cut short is
// resumed by the next bind (topology.PendingSweep).
func (w *sinkWorker) sweep(ctx context.Context, nc *nats.Conn, s leadSweep) (done bool) {
	stream := w.topo.EventsStreamOf(s.partition)
	log := w.log.With(zap.String("sink", w.name), zap.String("stream", stream), zap.Uint64("from_stream_sequence", s.from))
	var upTo uint64
	for wait := 200 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
		sctx, cancel := context.WithTimeout(ctx, brokerTimeout)
		st, err := w.js.Stream(sctx, stream)
		cancel()
		if err == nil {
			upTo = st.CachedInfo().State.LastSeq
			break
		}
		if sleep(ctx, wait, nil) != nil {
			log.Warn("the new lead's sweep of the old lead's backlog did not run: stopped; the next start resumes it", zap.Error(err))
			return false
		}
	}
	if s.prior.ReadsEverything() && s.prior.Start > 0 {
		upTo = min(upTo, s.prior.Start-1) // from its start, its consumer read everything
	}
	if upTo < s.from {
		return true
	}
	log.Info("this sink is the lead now (the config dropped the old one): checking what the old lead had not, "+
		"outside what this sink read before", zap.Uint64("to_stream_sequence", upTo))
	checked, next := 0, s.from
	each := func(m jsread.Msg) bool {
		next = m.Seq + 1
		if s.prior.Exists && m.Seq >= s.prior.Start && topology.Reads(s.prior.Filters, m.Subject) {
			return true // its consumer read it, and checked it (not below its start: it never read that)
		}
		for wait := 200 * time.Millisecond; ; wait = min(2*wait, 5*time.Second) {
			err := w.checkStored(ctx, stream, m, s.prior)
			if err == nil {
				break
			}
			log.Warn("could not check an event of the old lead's backlog; trying again", zap.Uint64("stream_sequence", m.Seq), zap.Error(err))
			if sleep(ctx, wait, nil) != nil {
				return false
			}
		}
		checked++
		return true
	}
	// A read that fails, or ends before upTo (a direct get answered by a
	// replica a moment behind: the stream's last event, upTo, is stored
	// and its tail is never removed first), goes on from where it stopped,
	// for up to sweepPatience without progress.
	stalled := time.Now()
	for wait := 200 * time.Millisecond; next <= upTo; wait = min(2*wait, 5*time.Second) {
		was := next
		err := jsread.Scan(ctx, nc, stream, w.topo.PartitionSubjects(s.partition), jsread.From{Seq: next}, upTo, "events", each)
		if ctx.Err() != nil {
			break
		}
		if next > upTo {
			break
		}
		if next > was {
			stalled, wait = time.Now(), 200*time.Millisecond
		}
		if time.Since(stalled) > sweepPatience {
			log.Warn("the new lead's sweep of the old lead's backlog gave up: the stream does not answer past this sequence",
				zap.Uint64("stream_sequence", next), zap.Int("checked", checked), zap.Error(err))
			return false
		}
		if sleep(ctx, wait, nil) != nil {
			break
		}
	}
	if next <= upTo {
		log.Warn("the new lead's sweep of the old lead's backlog stopped before its end; the next start resumes it "+
			"(docs/operations.md, \"Removing the lead\")", zap.Uint64("stream_sequence", next), zap.Int("checked", checked))
		return false
	}
	log.Info("checked the old lead's backlog", zap.Int("checked", checked), zap.Uint64("to_stream_sequence", upTo))
	return true
}

// sweepPatience is how long a sweep goes on trying to read past a point
// it does not get past.
const sweepPatience = time.Minute

// checkStored does a lead's duty for one stored event its consumer never
// read: an invalid envelope is dead-lettered, and every sink the event
// goes to that does not cover it (checkTargets) is dead-lettered for.
// For this sink itself, the event is judged by what its consumer read
// before it was made the lead, where it certainly passed over the event
// (at or below the last event it was delivered then).
func (w *sinkWorker) checkStored(ctx context.Context, stream string, m jsread.Msg, prior topology.PriorRead) error {
	at, _ := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
	origin, err := topology.OriginOf(stream, m.Seq)
	if err != nil {
		return err
	}
	d := &delivery{msg: storedMsg{m}, origin: origin, seq: m.Seq, received: at, queued: at}
	ev, err := envelope.ParseMessage(m.Header, m.Data, w.maxBytes)
	if err == nil {
		err = w.schemas.Check(ev.Type, ev.Data)
	}
	if err != nil {
		return w.writeDeadLetter(ctx, w.record(d, nil, dlq.NoSink, outcome.InvalidEnvelope, err))
	}
	targets, _ := w.routes.Eval(ev)
	var before *[]string
	if prior.Exists && m.Seq <= prior.Delivered {
		before = &prior.Filters
	}
	return w.checkTargets(ctx, d, ev, targets, before)
}

// storedMsg is an event read from the stream, not delivered by a
// consumer: what builds a dead letter reads it like a delivered message,
// and there is nothing to settle.
type storedMsg struct{ m jsread.Msg }

func (s storedMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return nil, fmt.Errorf("dispatch: event %d was read from the stream, not delivered", s.m.Seq)
}
func (s storedMsg) Data() []byte                     { return s.m.Data }
func (s storedMsg) Headers() nats.Header             { return s.m.Header }
func (s storedMsg) Subject() string                  { return s.m.Subject }
func (s storedMsg) Reply() string                    { return "" }
func (s storedMsg) Ack() error                       { return nil }
func (s storedMsg) DoubleAck(context.Context) error  { return nil }
func (s storedMsg) Nak() error                       { return nil }
func (s storedMsg) NakWithDelay(time.Duration) error { return nil }
func (s storedMsg) InProgress() error                { return nil }
func (s storedMsg) Term() error                      { return nil }
func (s storedMsg) TermWithReason(string) error      { return nil }
