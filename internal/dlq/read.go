package dlq

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

// Reading the dead-letter stream leaves nothing behind on the server: it
// is a series of message gets by sequence, each answered and forgotten,
// never a consumer. (Reads used to create an ordered consumer each, which
// the server kept for 5 minutes: one scan of the console's pages filled the
// stream's consumer cap, 1,000, and every read failed until they expired.)
//
// A stream that allows direct gets (topology.Ensure sets it) is read a
// batch at a time; one created before that (until a dispatcher of this
// version starts and updates it) one message per request, from its leader.
// Direct gets are answered by any replica, so a read may miss a record
// stored milliseconds before: fine for tools and pages a person reads,
// and a replay or purge changes a record only through its leader.

const (
	// A scan's first direct get asks for firstBatch records, each next
	// one for twice as many up to maxBatch: a console page (51 records)
	// costs one small batch, a full scan few requests. readBatchBytes
	// bounds a batch's bytes (the server sends at least one record).
	firstBatch     = 64
	maxBatch       = 4096
	readBatchBytes = 4 << 20
	// readWait bounds each wait for a reply: what is stored arrives well
	// within it.
	readWait = 5 * time.Second
)

// storedMsg is one message of the dead-letter stream as a get returns it.
type storedMsg struct {
	seq     uint64
	subject string
	header  nats.Header
	data    []byte
}

// scan calls each for every message on subject filter ("": any) from
// sequence from through upTo, in order, until each returns false.
func (s *Store) scan(ctx context.Context, stream jetstream.Stream, filter string, from, upTo uint64, each func(storedMsg) bool) error {
	if stream.CachedInfo().Config.AllowDirect {
		return s.scanDirect(ctx, stream.CachedInfo().Config.Name, filter, from, upTo, each)
	}
	if filter == "" {
		// A get without a subject is by sequence alone: a deleted
		// record would end the scan. The next on any subject steps over.
		filter = ">"
	}
	for from <= upTo {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("dlq: reading dead letters stopped: %w", err)
		}
		rctx, cancel := context.WithTimeout(ctx, readWait)
		m, err := stream.GetMsg(rctx, from, jetstream.WithGetMsgSubject(filter))
		cancel()
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("dlq: read from entry %d: %w", from, err)
		}
		if m.Sequence > upTo || !each(storedMsg{m.Sequence, m.Subject, m.Header, m.Data}) {
			return nil
		}
		from = m.Sequence + 1
	}
	return nil
}

// numPendingHeader is the end-of-batch status's count of the messages
// after the batch that match its filter.
const numPendingHeader = "Nats-Num-Pending"

// directGetRequest is the JetStream API's batched direct get.
type directGetRequest struct {
	Seq      uint64 `json:"seq"`
	NextFor  string `json:"next_by_subj,omitempty"`
	Batch    int    `json:"batch"`
	MaxBytes int    `json:"max_bytes"`
}

// scanDirect reads with batched direct gets: each request returns up to
// maxBatch messages, then an end-of-batch status saying how many more
// match. The replies come to one inbox for the whole scan, unsubscribed
// when it ends.
func (s *Store) scanDirect(ctx context.Context, streamName, filter string, from, upTo uint64, each func(storedMsg) bool) error {
	nc := s.js.Conn()
	inbox := nc.NewRespInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("dlq: %w", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	// Chapar's JetStream handles use the default API prefix (app.Connect).
	subject := jetstream.DefaultAPIPrefix + "DIRECT.GET." + streamName
	for batch := firstBatch; from <= upTo; batch = min(2*batch, maxBatch) {
		req, err := json.Marshal(directGetRequest{Seq: from, NextFor: filter, Batch: batch, MaxBytes: readBatchBytes})
		if err != nil {
			return fmt.Errorf("dlq: %w", err)
		}
		if err := nc.PublishRequest(subject, inbox, req); err != nil {
			return fmt.Errorf("dlq: read from entry %d: %w", from, err)
		}
		more, next, err := readBatchReplies(ctx, sub, upTo, each)
		if err != nil || !more {
			return err
		}
		from = next
	}
	return nil
}

// readBatchReplies reads one batch's replies up to its end: more says
// another batch is to be asked for, from next on.
func readBatchReplies(ctx context.Context, sub *nats.Subscription, upTo uint64, each func(storedMsg) bool) (more bool, next uint64, err error) {
	for {
		// Each reply within readWait of the one before: a large batch
		// on a busy server may take longer in all.
		rctx, cancel := context.WithTimeout(ctx, readWait)
		m, err := sub.NextMsgWithContext(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return false, 0, fmt.Errorf("dlq: reading dead letters stopped: %w", ctx.Err())
			}
			return false, 0, fmt.Errorf("dlq: no answer to a read of the dead letters within %v: %w", readWait, err)
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
			return false, 0, fmt.Errorf("dlq: read of the dead letters refused: %s %s", status, m.Header.Get("Description"))
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return false, 0, fmt.Errorf("dlq: a read of the dead letters returned no sequence: %w", err)
		}
		// Stopping ends the scan: the rest of the batch goes to an
		// inbox no longer subscribed, and is dropped.
		if seq > upTo || !each(storedMsg{seq, m.Header.Get(jetstream.SubjectHeader), m.Header, m.Data}) {
			return false, 0, nil
		}
		if err := ctx.Err(); err != nil {
			return false, 0, fmt.Errorf("dlq: reading dead letters stopped: %w", err)
		}
	}
}
