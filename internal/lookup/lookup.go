// Package lookup answers "where is my event?": for each sink of a
// deployment, what became of one event (delivered, retrying,
// dead-lettered), what it waits for (a backlog, an operator's pause), or
// why the sink does not get it. `dispatcher events show` prints it; the
// console shows it.
//
// It reads, never writes, and leaves nothing on the server: the event's
// delivery records by one direct get on their subject
// (internal/deliveries), the event itself by its stream sequence, and
// each sink's consumer's info.
package lookup

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/deliveries"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/jsread"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// State is a sink's answer for an event: a delivery record's state, or
// one of these.
type State string

const (
	Delivered    = State(deliveries.Delivered)
	Retrying     = State(deliveries.Retrying)
	DeadLettered = State(deliveries.DeadLettered)
	// Waiting: routed to the sink, not yet acked by its consumer.
	Waiting State = "waiting"
	// Paused: waiting, and the sink is paused by an operator.
	Paused State = "paused"
	// Acked: the sink's consumer is past it, and no record says how
	// (delivered before records were kept, or its record was lost).
	Acked State = "acked"
	// NotRouted: the config does not send the event to the sink.
	NotRouted State = "not_routed"
	// Unknown: no record, and the event could not be found to say more.
	Unknown State = "unknown"
)

// Sink is one sink's line of a report.
type Sink struct {
	Sink  string `json:"sink"`
	State State  `json:"state"`
	// Record is the sink's latest delivery record, if any.
	Record *deliveries.Record `json:"record,omitempty"`
	// Why says what a state other than a record's means here.
	Why string `json:"why,omitempty"`
	// Ahead, for a waiting event, is how many events of its stream lie
	// between the consumer's ack floor and it: at most what the sink
	// still has to take before it (a sink reading only its routes' types
	// is not handed the others).
	Ahead uint64 `json:"ahead,omitempty"`
}

// Report is what became of one event.
type Report struct {
	EventID string `json:"id"`
	// Stream and Seq locate the event, when a record names it.
	Stream string    `json:"stream,omitempty"`
	Seq    uint64    `json:"seq,omitempty"`
	Stored time.Time `json:"stored,omitzero"`
	// Type, Subject and Name are the envelope's, when it was read.
	Type    string `json:"type,omitempty"`
	Subject string `json:"subject,omitempty"`
	Name    string `json:"name,omitempty"`
	// Gone says the event was located but is no longer in its stream
	// (older than streams.max_age).
	Gone bool `json:"gone,omitempty"`
	// Scanned is how many unacked events were read to find an event no
	// sink has a record of (at most MaxBacklogScan).
	Scanned int    `json:"scanned,omitempty"`
	Sinks   []Sink `json:"sinks"`
	// RecordsKept is streams.deliveries_max_age: how far back records go.
	RecordsKept time.Duration `json:"records_kept_ns"`
}

// Found says anything is known of the event.
func (r Report) Found() bool {
	return r.Seq > 0 || slices.ContainsFunc(r.Sinks, func(s Sink) bool { return s.Record != nil })
}

// readWait bounds each read of the server.
const readWait = 5 * time.Second

// Show builds the report of event id for the sinks of cfg (and any other
// sink that recorded a delivery of it).
func Show(ctx context.Context, js jetstream.JetStream, cfg *config.Config, id string) (Report, error) {
	topo := topology.New(cfg.Streams)
	rep := Report{EventID: id, RecordsKept: cfg.Streams.DeliveriesMaxAge}
	if !cfg.Streams.RecordDeliveries {
		return rep, errors.New("lookup: streams.record_deliveries is off in this config, so no delivery is recorded; turn it on (the default) to look events up")
	}
	recs, err := records(ctx, js, topo, id)
	if err != nil {
		return rep, fmt.Errorf("lookup: %w", err)
	}
	bySink := map[string]deliveries.Record{}
	for _, r := range recs {
		bySink[r.Sink] = r
		if r.Seq > 0 && rep.Seq == 0 {
			rep.Stream, rep.Seq = r.Stream, r.Seq
		}
		rep.Type, rep.Subject, rep.Name = first(rep.Type, r.Type), first(rep.Subject, r.Subject), first(rep.Name, r.Name)
	}
	if rep.Seq == 0 {
		// Not settled by any sink: if it is anywhere, it is in a
		// backlog, past some consumer's ack floor.
		if err := rep.locate(ctx, js, topo, cfg, id); err != nil {
			return rep, err
		}
	}
	ev := rep.read(ctx, js, topo)
	pauses, _ := topo.OperatorPauses(ctx, js) // a pause unknown is just not shown
	routes, err := dispatch.NewRoutes(cfg.Routes)
	if err != nil {
		return rep, fmt.Errorf("lookup: %w", err)
	}
	for _, sc := range cfg.Sinks {
		s := Sink{Sink: sc.Name}
		if r, ok := bySink[sc.Name]; ok {
			s.State, s.Record = State(r.State), &r
			delete(bySink, sc.Name)
		} else {
			s = rep.explain(ctx, js, topo, s, ev, routes, pauses[sc.Name].Paused)
		}
		rep.Sinks = append(rep.Sinks, s)
	}
	// Records of sinks this config does not have (removed, or another
	// replica's): shown, not explained.
	for _, r := range recs {
		if _, ok := bySink[r.Sink]; ok {
			rep.Sinks = append(rep.Sinks, Sink{Sink: r.Sink, State: State(r.State), Record: &r, Why: "not a sink of this config"})
		}
	}
	return rep, nil
}

// MaxBacklogScan bounds how many unacked events locate reads to find an
// event no sink has settled: a backlog is read message by message (no
// index by id), a few hundred thousand a second.
const MaxBacklogScan = 200_000

// locate finds an event no sink has a record of among the events not yet
// acked by every sink's consumer: from the lowest ack floor of the
// config's sinks on each events stream, up to MaxBacklogScan events.
func (rep *Report) locate(ctx context.Context, js jetstream.JetStream, topo topology.Topology, cfg *config.Config, id string) error {
	budget := MaxBacklogScan
	for _, stream := range topo.EventsStreams() {
		from := uint64(0)
		for _, sc := range cfg.Sinks {
			rctx, cancel := context.WithTimeout(ctx, readWait)
			c, err := js.Consumer(rctx, stream, topology.SinkConsumer(sc.Name))
			cancel()
			if err != nil {
				continue // not bound yet, or gone: nothing waits for it there
			}
			if f := c.CachedInfo().AckFloor.Stream + 1; from == 0 || f < from {
				from = f
			}
		}
		if from == 0 {
			continue
		}
		err := jsread.Scan(ctx, js.Conn(), stream, "", jsread.From{Seq: from}, 0, "events", func(m jsread.Msg) bool {
			budget--
			if m.Header.Get(jetstream.MsgIDHeader) == id || (m.Header.Get(jetstream.MsgIDHeader) == "" && envelope.ProbeID(m.Header, m.Data) == id) {
				rep.Stream, rep.Seq = stream, m.Seq
				return false
			}
			return budget > 0
		})
		if err != nil {
			return fmt.Errorf("lookup: %w", err)
		}
		if rep.Seq > 0 || budget <= 0 {
			break
		}
	}
	rep.Scanned = MaxBacklogScan - budget
	return nil
}

// read gets the event from its stream, when a record located it.
func (rep *Report) read(ctx context.Context, js jetstream.JetStream, topo topology.Topology) *envelope.Event {
	if rep.Seq == 0 {
		return nil
	}
	rctx, cancel := context.WithTimeout(ctx, readWait)
	defer cancel()
	st, err := js.Stream(rctx, rep.Stream)
	if err != nil {
		return nil
	}
	m, err := st.GetMsg(rctx, rep.Seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		rep.Gone = true
		return nil
	}
	if err != nil {
		return nil
	}
	rep.Stored = m.Time
	// Structured or binary mode (ce-* headers), as the dispatcher reads it.
	ev, err := envelope.ParseMessage(m.Header, m.Data, topo.MaxEnvelopeBytes())
	if err != nil {
		return nil
	}
	rep.Type, rep.Subject, rep.Name = ev.Type, ev.Subject, ev.Name()
	return ev
}

// explain says what a sink with no record of the event does with it.
func (rep *Report) explain(ctx context.Context, js jetstream.JetStream, topo topology.Topology, s Sink, ev *envelope.Event, routes *dispatch.Routes, paused bool) Sink {
	if ev == nil {
		s.State = Unknown
		switch {
		case rep.Gone:
			s.Why = "the event is older than streams.max_age and left its stream; this sink recorded nothing of it"
		case rep.Seq == 0:
			s.Why = "no sink recorded a delivery of it, and it is not among the events a sink has not acked"
			if rep.Scanned >= MaxBacklogScan {
				s.Why = fmt.Sprintf("no sink recorded a delivery of it, and it is not among the first %d events a sink has not acked", MaxBacklogScan)
			}
		default:
			s.Why = "the event could not be read from its stream"
		}
		return s
	}
	// The config's routes, filters and all, told from this sink's side
	// (as the worker routes: Routes.Why agrees with Match).
	if why := routes.Why(ev, s.Sink); why.Reason != dispatch.Routed && why.Reason != dispatch.Named {
		s.State, s.Why = NotRouted, why.Explain(ev)
		return s
	}
	rctx, cancel := context.WithTimeout(ctx, readWait)
	defer cancel()
	c, err := js.Consumer(rctx, rep.Stream, topology.SinkConsumer(s.Sink))
	if err != nil {
		s.State, s.Why = Unknown, "its consumer on "+rep.Stream+" cannot be read: "+err.Error()
		return s
	}
	info := c.CachedInfo()
	switch floor := info.AckFloor.Stream; {
	case floor >= rep.Seq:
		s.State, s.Why = Acked, "its consumer acked it and no record says how: delivered before delivery records were kept, or its record was lost"
	case paused:
		s.State, s.Ahead, s.Why = Paused, rep.Seq-floor-1, "the sink is paused by an operator (dispatcher sinks resume "+s.Sink+")"
	default:
		s.State, s.Ahead = Waiting, rep.Seq-floor-1
		s.Why = "routed to the sink, not yet acked by its consumer"
		if info.Delivered.Stream >= rep.Seq {
			s.Why = "routed to the sink and handed to a dispatcher: in flight, or waiting for its turn"
		}
	}
	return s
}

func first(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Deployment looks events up in one deployment: what the console needs.
type Deployment struct {
	JS     jetstream.JetStream
	Config *config.Config
}

// Show is Show in d.
func (d Deployment) Show(ctx context.Context, id string) (Report, error) {
	return Show(ctx, d.JS, d.Config, id)
}

// Records are the event's delivery records, each sink's latest, of those
// stored since since (the zero time: all).
func (d Deployment) Records(ctx context.Context, id string, since time.Time) ([]deliveries.Record, error) {
	topo := topology.New(d.Config.Streams)
	return deliveries.Lookup(ctx, d.JS.Conn(), topo.DeliveriesStream(), topo.Prefix(), id, jsread.From{Time: since})
}

// records are event id's delivery records, each sink's latest: read from
// the time in its id (deliveries.Since), a bounded part of the stream for
// a recent event; if none are there (an id of another kind, a producer's
// clock far ahead), from the start.
func records(ctx context.Context, js jetstream.JetStream, topo topology.Topology, id string) ([]deliveries.Record, error) {
	read := func(from jsread.From) ([]deliveries.Record, error) {
		rctx, cancel := context.WithTimeout(ctx, readWait)
		defer cancel()
		return deliveries.Lookup(rctx, js.Conn(), topo.DeliveriesStream(), topo.Prefix(), id, from)
	}
	from := deliveries.Since(id)
	recs, err := read(from)
	if err != nil || len(recs) > 0 || from == (jsread.From{}) {
		return recs, err
	}
	return read(jsread.From{})
}

// List is List in d.
func (d Deployment) List(ctx context.Context, f Filter, each func(Entry) bool) error {
	return List(ctx, d.JS, d.Config, f, each)
}
