// Package jsread reads a stream's messages with batched direct gets: a
// series of requests, each answered and forgotten, never a consumer, so a
// tool or a page view leaves nothing behind on the server. (Reads used to
// create an ordered consumer each, which the server kept for 5 minutes:
// one scan of the console's dead-letter pages filled a stream's consumer
// cap, 1,000, and every read failed until they expired.)
//
// The stream must allow direct gets (topology.Ensure sets it on the
// streams Chapar reads this way). Direct gets are answered by any
// replica, so a read may miss a message stored milliseconds before: fine
// for tools and pages a person reads.
package jsread

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	// A scan's first request asks for FirstBatch messages, each next one
	// for twice as many up to MaxBatch: a page of 51 records costs one
	// small batch, a full scan few requests. batchBytes bounds a batch's
	// bytes (the server sends at least one message).
	FirstBatch = 64
	MaxBatch   = 4096
	batchBytes = 4 << 20
	// Wait bounds each wait for a reply: what is stored arrives well
	// within it.
	Wait = 5 * time.Second
)

// Msg is one stored message as a get returns it.
type Msg struct {
	Seq     uint64
	Subject string
	Header  nats.Header
	Data    []byte
}

// From says where a scan begins: at a sequence, or at the first message
// stored at or after a time.
type From struct {
	Seq  uint64
	Time time.Time
}

// numPendingHeader is the end-of-batch status's count of the messages
// after the batch that match its filter.
const numPendingHeader = "Nats-Num-Pending"

// request is the JetStream API's batched direct get.
type request struct {
	Seq       uint64     `json:"seq,omitempty"`
	StartTime *time.Time `json:"start_time,omitempty"`
	NextFor   string     `json:"next_by_subj,omitempty"`
	Batch     int        `json:"batch"`
	MaxBytes  int        `json:"max_bytes"`
}

// Scan calls each for every message of stream on subject filter (a
// literal subject or a wildcard; "" is any) from from through sequence
// upTo (0: no bound), in order, until each returns false. what names the
// stream's contents in errors ("dead letters").
func Scan(ctx context.Context, nc *nats.Conn, stream, filter string, from From, upTo uint64, what string, each func(Msg) bool) error {
	if filter == "" {
		filter = ">"
	}
	if upTo == 0 {
		upTo = ^uint64(0)
	}
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("reading %s: %w", what, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// Chapar's JetStream handles use the default API prefix (app.Connect).
	subject := jetstream.DefaultAPIPrefix + "DIRECT.GET." + stream
	req := request{Seq: from.Seq, NextFor: filter, MaxBytes: batchBytes}
	if !from.Time.IsZero() {
		t := from.Time.UTC()
		req.Seq, req.StartTime = 0, &t
	} else if req.Seq == 0 {
		req.Seq = 1
	}
	for batch := FirstBatch; ; batch = min(2*batch, MaxBatch) {
		req.Batch = batch
		body, err := json.Marshal(req)
		if err != nil {
			return fmt.Errorf("reading %s: %w", what, err)
		}
		if err := nc.PublishRequest(subject, inbox, body); err != nil {
			return fmt.Errorf("reading %s from entry %d: %w", what, req.Seq, err)
		}
		more, next, err := readBatch(ctx, sub, upTo, what, each)
		if errors.Is(err, nats.ErrNoResponders) {
			// Answered at once, by no server: not a timeout.
			return fmt.Errorf("reading the %s: no server serves stream %s: it does not exist (has a dispatcher run against "+
				"this NATS with this config's streams?), or its servers are down: %w", what, stream, err)
		}
		if err != nil || !more {
			return err
		}
		req.Seq, req.StartTime = next, nil
	}
}

// readBatch reads one batch's replies up to its end: more says another
// batch is to be asked for, from next on.
func readBatch(ctx context.Context, sub *nats.Subscription, upTo uint64, what string, each func(Msg) bool) (more bool, next uint64, err error) {
	for {
		// Each reply within Wait of the one before: a large batch on a
		// busy server may take longer in all.
		rctx, cancel := context.WithTimeout(ctx, Wait)
		m, err := sub.NextMsgWithContext(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return false, 0, fmt.Errorf("reading %s stopped: %w", what, ctx.Err())
			}
			if errors.Is(err, nats.ErrNoResponders) {
				return false, 0, err // Scan names the stream
			}
			return false, 0, fmt.Errorf("no answer to a read of the %s within %v: %w", what, Wait, err)
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "404": // nothing stored from there on
			return false, 0, nil
		case "204": // end of batch
			pending, _ := strconv.ParseUint(m.Header.Get(numPendingHeader), 10, 64)
			last, _ := strconv.ParseUint(m.Header.Get(jetstream.LastSequenceHeader), 10, 64)
			return pending > 0 && last > 0 && last < upTo, last + 1, nil
		default:
			return false, 0, fmt.Errorf("a read of the %s was refused: %s %s", what, status, m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return false, 0, fmt.Errorf("a read of the %s returned no sequence: %w", what, err)
		}
		// Stopping ends the scan: the rest of the batch goes to an inbox
		// no longer subscribed, and is dropped.
		if seq > upTo || !each(Msg{Seq: seq, Subject: m.Header.Get(jetstream.SubjectHeader), Header: m.Header, Data: m.Data}) {
			return false, 0, nil
		}
		if err := ctx.Err(); err != nil {
			return false, 0, fmt.Errorf("reading %s stopped: %w", what, err)
		}
	}
}
