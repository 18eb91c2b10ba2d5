package redeliver

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Reading the events streams leaves nothing behind on the server: batched
// direct gets (the events streams allow them, topology.Ensure), the first
// one of each partition by start time, each answered and forgotten. No
// consumer, durable or ordered, is created.

const (
	// readBatch is how many events one direct get asks for per
	// partition: what the merge holds in memory is at most this many per
	// partition. readBatchBytes bounds a batch's bytes.
	readBatch      = 256
	readBatchBytes = 4 << 20
	// readWait bounds each wait for a reply: what is stored arrives well
	// within it.
	readWait = 5 * time.Second
)

// stored is one event as a direct get returns it.
type stored struct {
	stream    string
	partition int
	seq       uint64
	at        time.Time // when it was stored
	subject   string
	header    nats.Header
	data      []byte
}

// directGetRequest is the JetStream API's batched direct get.
type directGetRequest struct {
	Seq       uint64     `json:"seq,omitempty"`
	StartTime *time.Time `json:"start_time,omitempty"`
	Batch     int        `json:"batch"`
	MaxBytes  int        `json:"max_bytes"`
}

// partition reads one events stream from the first event at or after
// since through the last one stored when it began (upTo) or until, in
// order, a batch at a time.
type partition struct {
	nc     *nats.Conn
	stream string
	index  int
	since  time.Time
	until  time.Time
	upTo   uint64
	sub    *nats.Subscription
	next   uint64 // the next sequence to ask for; 0 before the first batch
	buf    []stored
	done   bool
}

// open subscribes the partition's reply inbox; close unsubscribes it.
func (p *partition) open() error {
	sub, err := p.nc.SubscribeSync(p.nc.NewRespInbox())
	if err != nil {
		return fmt.Errorf("redeliver: %w", err)
	}
	p.sub = sub
	return nil
}

func (p *partition) close() {
	if p.sub != nil {
		_ = p.sub.Unsubscribe()
	}
}

// head is the partition's next event, reading a batch if none is held:
// nil once the window is read.
func (p *partition) head(ctx context.Context) (*stored, error) {
	for len(p.buf) == 0 && !p.done {
		if err := p.fill(ctx); err != nil {
			return nil, err
		}
	}
	if len(p.buf) == 0 {
		return nil, nil
	}
	return &p.buf[0], nil
}

func (p *partition) pop() { p.buf = p.buf[1:] }

// fill reads one batch, whole: replies are never left unread in the inbox.
func (p *partition) fill(ctx context.Context) error {
	req := directGetRequest{Seq: p.next, Batch: readBatch, MaxBytes: readBatchBytes}
	if p.next == 0 {
		since := p.since.UTC()
		req.StartTime = &since
	}
	body, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("redeliver: %w", err)
	}
	// Chapar's JetStream handles use the default API prefix (app.Connect).
	subject := jetstream.DefaultAPIPrefix + "DIRECT.GET." + p.stream
	if err := p.nc.PublishRequest(subject, p.sub.Subject, body); err != nil {
		return fmt.Errorf("redeliver: read %s: %w", p.stream, err)
	}
	for {
		rctx, cancel := context.WithTimeout(ctx, readWait)
		m, err := p.sub.NextMsgWithContext(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("redeliver: reading %s stopped: %w", p.stream, ctx.Err())
			}
			return fmt.Errorf("redeliver: no answer to a read of %s within %v: %w", p.stream, readWait, err)
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "404": // nothing stored from there on
			p.done = true
			return nil
		case "204": // end of batch
			pending, _ := strconv.ParseUint(m.Header.Get("Nats-Num-Pending"), 10, 64)
			last, _ := strconv.ParseUint(m.Header.Get(jetstream.LastSequenceHeader), 10, 64)
			if pending == 0 || last == 0 || last >= p.upTo {
				p.done = true
			}
			p.next = last + 1
			return nil
		default:
			return fmt.Errorf("redeliver: read of %s refused: %s %s", p.stream, status, m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return fmt.Errorf("redeliver: a read of %s returned no sequence: %w", p.stream, err)
		}
		at, err := time.Parse(time.RFC3339Nano, m.Header.Get(jetstream.TimeStampHeaer))
		if err != nil {
			return fmt.Errorf("redeliver: a read of %s returned no time: %w", p.stream, err)
		}
		if seq > p.upTo || at.After(p.until) {
			// Past the window: the batch's rest is read and dropped,
			// and no other batch asked for.
			p.done = true
			continue
		}
		if !p.done {
			p.buf = append(p.buf, stored{stream: p.stream, partition: p.index, seq: seq, at: at,
				subject: m.Header.Get(jetstream.SubjectHeader), header: m.Header, data: m.Data})
		}
	}
}

// merge reads every partition in time order: the event stored first comes
// first, whichever partition holds it (ties: the lower partition). Time
// order makes where a job stopped one point in time, for --since.
type merge struct{ parts []*partition }

// next is the window's next event, nil at its end; pop it once handled.
func (m *merge) next(ctx context.Context) (*partition, *stored, error) {
	var best *partition
	var head *stored
	for _, p := range m.parts {
		h, err := p.head(ctx)
		if err != nil {
			return nil, nil, err
		}
		if h != nil && (head == nil || h.at.Before(head.at)) {
			best, head = p, h
		}
	}
	return best, head, nil
}

func (m *merge) close() {
	for _, p := range m.parts {
		p.close()
	}
}
