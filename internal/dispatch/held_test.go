package dispatch

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
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

// A held message reads its metadata from its reply subject in each form
// the server writes it: v1 ($JS.ACK.<stream>.<consumer>.<delivered>.
// <stream seq>.<consumer seq>.<time>.<pending>, 9 tokens) and v2, behind
// nats-server's js_ack_fc_v2 flag (the domain, "_" for none, and the
// account hash after $JS.ACK: 11 tokens), with and without a JetStream
// domain; as the client reads it, and as the server wrote it (stream and
// consumer names with - and _, the pending count). And the server takes
// its settlements on each form: in progress keeps it past ack_wait, an
// ack ends it, a nak brings it back, a term ends it.
func TestHeldMsgMetadataAndSettlementOnEveryReplyForm(t *testing.T) {
	for _, tc := range []struct {
		name, domain string
		v2           bool
		tokens       int
	}{
		{name: "v1", tokens: 9},
		{name: "v1 domain", domain: "hub", tokens: 9},
		{name: "v2", v2: true, tokens: 11},
		{name: "v2 domain", domain: "hub", v2: true, tokens: 11},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			opts := &server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true, StoreDir: t.TempDir(),
				JetStreamDomain: tc.domain, FeatureFlags: map[string]bool{"js_ack_fc_v2": tc.v2}, NoLog: true, NoSigs: true}
			s, err := server.NewServer(opts)
			if err != nil {
				t.Fatal(err)
			}
			go s.Start()
			if !s.ReadyForConnections(10 * time.Second) {
				t.Fatal("server not ready")
			}
			t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
			nc, err := nats.Connect(s.ClientURL())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(nc.Close)
			js, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			const stream, durable, ackWait = "EV-ents_1", "sink-gate_way", 500 * time.Millisecond
			if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: stream, Subjects: []string{"ev.>"}}); err != nil {
				t.Fatal(err)
			}
			c, err := js.CreateConsumer(ctx, stream, jetstream.ConsumerConfig{Durable: durable, AckPolicy: jetstream.AckExplicitPolicy, AckWait: ackWait})
			if err != nil {
				t.Fatal(err)
			}
			a := &ackWaitConsumer{nc: nc, js: js, c: c, t: t}
			publish := func(i int) {
				t.Helper()
				if _, err := js.Publish(ctx, "ev.track", []byte(fmt.Sprint(i))); err != nil {
					t.Fatal(err)
				}
			}
			publish(0)
			publish(1)
			info := func() *jetstream.ConsumerInfo {
				t.Helper()
				i, err := c.Info(ctx)
				if err != nil {
					t.Fatal(err)
				}
				return i
			}

			// Both counted as pending before the first is handed out (the
			// server counts what a consumer has pending apart from
			// storing it).
			for deadline := time.Now().Add(5 * time.Second); info().NumPending != 2; {
				if time.Now().After(deadline) {
					t.Fatalf("consumer pending %d, want 2", info().NumPending)
				}
				time.Sleep(10 * time.Millisecond)
			}
			m := a.fetch(5 * time.Second)
			if m == nil {
				t.Fatal("nothing fetched")
			}
			if n := strings.Count(m.Reply(), ".") + 1; n != tc.tokens {
				t.Fatalf("reply %q has %d tokens, want %d (the form under test)", m.Reply(), n, tc.tokens)
			}
			held := holdMsg(nc, m)
			want, err := m.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			got, err := held.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			if *got != *want {
				t.Errorf("held metadata %+v, the client's %+v", got, want)
			}
			wantDomain := ""
			if tc.v2 {
				wantDomain = tc.domain
			}
			if got.Domain != wantDomain || got.Stream != stream || got.Consumer != durable || got.NumDelivered != 1 ||
				got.Sequence.Stream != 1 || got.Sequence.Consumer != 1 || got.NumPending != 1 || time.Since(got.Timestamp) > time.Minute {
				t.Errorf("held metadata %+v of %q; want domain %q, %s > %s, first delivery of 1, 1 pending, stored just now",
					got, m.Reply(), wantDomain, stream, durable)
			}

			// Acked: the server takes it (its ack floor moves).
			if err := held.Ack(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(5 * time.Second)
			for info().AckFloor.Stream != 1 {
				if time.Now().After(deadline) {
					t.Fatalf("the held message's ack was not taken: ack floor %+v", info().AckFloor)
				}
				time.Sleep(20 * time.Millisecond)
			}

			// Nakked: handed out again at once; then terminated.
			held = holdMsg(nc, a.fetch(5*time.Second))
			if err := held.Nak(); err != nil {
				t.Fatal(err)
			}
			again := a.fetch(5 * time.Second)
			if again == nil {
				t.Fatal("a nakked held message was not handed out again")
			}
			meta, err := holdMsg(nc, again).Metadata()
			if err != nil || meta.Sequence.Stream != 2 || meta.NumDelivered != 2 {
				t.Fatalf("handed out again as %+v (%v), want stream sequence 2, second delivery", meta, err)
			}
			if err := holdMsg(nc, again).Term(); err != nil {
				t.Fatal(err)
			}

			// In progress past ack_wait: not handed out again; then acked.
			// (Published now: a nak is taken after the next pull may be
			// served, which could take a message published before.)
			publish(2)
			last := a.fetch(5 * time.Second)
			if last == nil || string(last.Data()) != "2" {
				t.Fatalf("after the term fetched %v, want the third message", last)
			}
			held = holdMsg(nc, last)
			for range 4 {
				if err := held.InProgress(); err != nil {
					t.Fatal(err)
				}
				if m := a.fetch(ackWait / 2); m != nil {
					meta, _ := m.Metadata()
					t.Fatalf("handed out again while held in progress, or after its term: %+v", meta)
				}
			}
			if err := held.Ack(); err != nil {
				t.Fatal(err)
			}
			if m := a.fetch(2 * ackWait); m != nil {
				meta, _ := m.Metadata()
				t.Errorf("an acked or terminated held message was handed out again: %+v", meta)
			}
			if i := info(); i.NumAckPending != 0 || i.NumPending != 0 {
				t.Errorf("%d pending, %d ack pending at the end, want none", i.NumPending, i.NumAckPending)
			}
		})
	}
}

// A held message's reply subject parsed as the client parses it
// (nats.go's jetstream/internal/parser): 9 tokens (v1) or at least 11
// (v2, whose 12th and later tokens are an extension the client ignores);
// any other count, or another prefix, is not a JetStream message; a
// number that is not one reads 0; the domain "_" is none.
func TestHeldMsgMetadataParsesAsTheClient(t *testing.T) {
	type want struct {
		domain, stream, consumer       string
		delivered, sseq, cseq, pending uint64
		ts                             int64
	}
	for _, tc := range []struct {
		reply string
		want  *want // nil: not a JetStream message
	}{
		{"$JS.ACK.S.C.1.2.3.4.5", &want{"", "S", "C", 1, 2, 3, 5, 4}},
		{"$JS.ACK._.hash.S.C.1.2.3.4.5", &want{"", "S", "C", 1, 2, 3, 5, 4}},
		{"$JS.ACK.hub.hash.S.C.1.2.3.4.5", &want{"hub", "S", "C", 1, 2, 3, 5, 4}},
		{"$JS.ACK.hub.hash.S.C.1.2.3.4.5.rand", &want{"hub", "S", "C", 1, 2, 3, 5, 4}},
		{"$JS.ACK.hub.hash.S.C.1.2.3.4.5.rand.more", &want{"hub", "S", "C", 1, 2, 3, 5, 4}},
		{"$JS.ACK.EV-1.sink_a.7.x.3.4.-1", &want{"", "EV-1", "sink_a", 7, 0, 3, 0, 4}},
		{"$JS.ACK.S.C.1.2.3.4", nil},
		{"$JS.ACK.hub.hash.S.C.1.2.3.4", nil},
		{"$JS.NAK.S.C.1.2.3.4.5", nil},
		{"JS.ACK.S.C.1.2.3.4.5", nil},
	} {
		meta, err := (&heldMsg{reply: tc.reply}).Metadata()
		if tc.want == nil {
			if !errors.Is(err, jetstream.ErrNotJSMessage) {
				t.Errorf("%q: %+v, %v; want ErrNotJSMessage", tc.reply, meta, err)
			}
			continue
		}
		w := tc.want
		if err != nil || meta.Domain != w.domain || meta.Stream != w.stream || meta.Consumer != w.consumer ||
			meta.NumDelivered != w.delivered || meta.Sequence.Stream != w.sseq || meta.Sequence.Consumer != w.cseq ||
			meta.NumPending != w.pending || meta.Timestamp.UnixNano() != w.ts {
			t.Errorf("%q: %+v, %v; want %+v", tc.reply, meta, err, *w)
		}
	}
}
