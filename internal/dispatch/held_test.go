package dispatch

import (
	"context"
	"errors"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A held message (a keyed batcher's, held.go) reads as the client's
// message it replaces (body, subject, every header value, metadata) and
// settles it as the client would, against a real JetStream: an ack is
// final, a delayed nak hands it out again after the delay and not before,
// an in-progress ack keeps it past ack_wait, a term ends it, and after a
// settlement a second one is refused.
func TestHeldMsgReadsAndSettlesAsTheClientsMessage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const ackWait = 400 * time.Millisecond
	a := newAckWaitConsumer(ctx, t, "HM", "hm.>", ackWait)
	nc, js, c, fetch := a.nc, a.js, a.c, a.fetch
	publish := func(subject string, h nats.Header, data string) jetstream.Msg {
		t.Helper()
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: h, Data: []byte(data)}); err != nil {
			t.Fatal(err)
		}
		m := fetch(5 * time.Second)
		if m == nil {
			t.Fatal("the message published was not fetched within 5s")
		}
		return m
	}
	pending := func() int {
		t.Helper()
		info, err := c.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.NumAckPending + int(info.NumPending)
	}

	// Reads.
	h := nats.Header{"Nats-Msg-Id": {"id-1"}, "ce-type": {"chapar.track"}, "Traceparent": {"00-a-b-01"}, "Multi": {"one", "two"}}
	m := publish("hm.track", h, `{"x":1}`)
	held := holdMsg(nc, m)
	if string(held.Data()) != `{"x":1}` || held.Subject() != "hm.track" || held.Reply() != m.Reply() {
		t.Errorf("held: data %q, subject %q, reply %q; want the message's", held.Data(), held.Subject(), held.Reply())
	}
	got := held.Headers()
	if !maps.EqualFunc(got, m.Headers(), slices.Equal) {
		t.Errorf("held headers %v, want %v", got, m.Headers())
	}
	got["Multi"] = nil // the caller's own map
	if !slices.Equal(held.Headers()["Multi"], []string{"one", "two"}) {
		t.Error("changing the map Headers returned changed the held message")
	}
	want, err := m.Metadata()
	if err != nil {
		t.Fatal(err)
	}
	meta, err := held.Metadata()
	if err != nil || *meta != *want {
		t.Errorf("held metadata %+v (%v), want %+v", meta, err, want)
	}
	// An in-progress ack keeps it over three ack_waits, then an ack ends it.
	for range 6 {
		if err := held.InProgress(); err != nil {
			t.Fatal(err)
		}
		if again := fetch(ackWait / 2); again != nil {
			t.Fatal("a held message kept in progress was handed out again")
		}
	}
	if err := held.Ack(); err != nil {
		t.Fatal(err)
	}
	if err := held.Ack(); !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		t.Errorf("a second ack: %v, want ErrMsgAlreadyAckd", err)
	}
	if err := held.InProgress(); !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		t.Errorf("in progress after the ack: %v, want ErrMsgAlreadyAckd", err)
	}
	if again := fetch(2 * ackWait); again != nil {
		t.Fatal("an acked held message was handed out again")
	}
	if n := pending(); n != 0 {
		t.Errorf("after the ack %d messages pending, want 0", n)
	}

	// A delayed nak: not before the delay, then again (second delivery).
	held = holdMsg(nc, publish("hm.track", nil, "nak"))
	if held.Headers() != nil {
		t.Errorf("a message without headers: held headers %v", held.Headers())
	}
	const delay = 1500 * time.Millisecond
	naked := time.Now()
	if err := held.NakWithDelay(delay); err != nil {
		t.Fatal(err)
	}
	again := fetch(10 * time.Second)
	if again == nil {
		t.Fatal("a message nakked with a delay did not come back")
	}
	if waited := time.Since(naked); waited < delay-100*time.Millisecond {
		t.Errorf("came back after %s, before the nak's delay %s", waited, delay)
	}
	if meta, _ := again.Metadata(); meta == nil || meta.NumDelivered != 2 || string(again.Data()) != "nak" {
		t.Errorf("came back as %+v, want its second delivery", meta)
	}

	// A term ends it: never handed out again.
	held = holdMsg(nc, again)
	if err := held.TermWithReason("dead-lettered"); err != nil {
		t.Fatal(err)
	}
	if err := held.Nak(); !errors.Is(err, jetstream.ErrMsgAlreadyAckd) {
		t.Errorf("a nak after the term: %v, want ErrMsgAlreadyAckd", err)
	}
	if m := fetch(2 * ackWait); m != nil {
		t.Fatal("a terminated held message was handed out again")
	}
	if n := pending(); n != 0 {
		t.Errorf("after the term %d messages pending, want 0", n)
	}
}
