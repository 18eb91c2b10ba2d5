package main

// The events: CloudEvents envelopes (pkg/envelope) of type chapar.track,
// each carrying its sequence number and the publisher's clock reading just
// before the publish, published with Nats-Msg-Id set to the envelope id.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

// benchEvent is event seq, stamped with now, for user-<seq> or, with
// users > 0, user-<seq mod users> (probes: user probe), of type typ and
// named name (chapar.track, order_paid unless a scenario routes by them).
func benchEvent(seq, users int, typ, name string, now time.Time) (raw []byte, id string, err error) {
	user := fmt.Sprintf("user-%d", seq)
	switch {
	case seq < 0:
		user = "probe"
	case users > 0:
		user = fmt.Sprintf("user-%d", seq%users)
	}
	data, err := json.Marshal(envelope.Track{
		Name: name,
		Properties: map[string]any{
			"benchSeq": seq, "sentAt": strconv.FormatInt(now.UnixNano(), 10),
			"orderId": fmt.Sprintf("A-%d", seq), "items": 3, "firstOrder": true,
		},
		User: envelope.User{ID: user, ChabokInstallationID: "inst-1"},
	})
	if err != nil {
		return nil, "", err
	}
	u, err := uuid.NewV7()
	if err != nil {
		return nil, "", err
	}
	at := now.UTC()
	env := &envelope.Envelope{
		SpecVersion: envelope.SpecVersion, ID: u.String(), Source: "bench", Type: typ,
		Time: &at, DataContentType: envelope.ContentTypeJSON, Data: data,
	}
	raw, err = env.Marshal()
	return raw, env.ID, err
}

type publisher struct {
	js jetstream.JetStream
	// subject is where an event with this partition key and type goes
	// (the bench's events have no subject or partitionkey: the key is the
	// id).
	subject func(key, typ string) string
	users   int // events spread over this many users (0: one each)
	// kind, if set, is event seq's type and name (else chapar.track,
	// order_paid): the split scenarios route each event to one sink by it.
	kind func(seq int) (typ, name string)
}

// kindOf is event seq's type and name.
func (p publisher) kindOf(seq int) (typ, name string) {
	if p.kind == nil {
		return envelope.TypeTrack, "order_paid"
	}
	return p.kind(seq)
}

// probe publishes one probe (seq < 0), retrying while no stream takes the
// subject yet: a system that makes its own streams may still be starting.
func (p publisher) probe(ctx context.Context, seq int) error {
	typ, name := p.kindOf(seq)
	raw, id, err := benchEvent(seq, p.users, typ, name, time.Now())
	if err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := p.js.Publish(ctx, p.subject(id, typ), raw, jetstream.WithMsgID(id))
		if err == nil || !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, jetstream.ErrNoStreamResponse) {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no stream took %s within 30s: %w", p.subject(id, typ), err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// backlog publishes events 0..n-1 as fast as JetStream acks them.
func (p publisher) backlog(ctx context.Context, n int) error {
	return p.publish(ctx, n, 0)
}

// paced publishes events 0..n-1 at rate per second on a fixed schedule.
func (p publisher) paced(ctx context.Context, n, rate int) error {
	return p.publish(ctx, n, time.Second/time.Duration(rate))
}

func (p publisher) publish(ctx context.Context, n int, every time.Duration) error {
	acks := make([]jetstream.PubAckFuture, 0, n)
	start := time.Now()
	for seq := range n {
		if every > 0 {
			if d := time.Until(start.Add(time.Duration(seq) * every)); d > 0 {
				time.Sleep(d)
			}
		}
		typ, name := p.kindOf(seq)
		raw, id, err := benchEvent(seq, p.users, typ, name, time.Now())
		if err != nil {
			return err
		}
		// A busy server may hold acks back: wait for them, do not fail.
		f, err := p.js.PublishAsync(p.subject(id, typ), raw, jetstream.WithMsgID(id), jetstream.WithStallWait(time.Minute))
		if err != nil {
			return fmt.Errorf("publish event %d: %w", seq, err)
		}
		acks = append(acks, f)
	}
	timeout := time.After(2 * time.Minute)
	for seq, f := range acks {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return fmt.Errorf("publish event %d: %w", seq, err)
		case <-ctx.Done():
			return ctx.Err()
		case <-timeout:
			return errors.New("publish acks did not arrive within 2m")
		}
	}
	return nil
}
