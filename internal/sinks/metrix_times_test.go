package sinks

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Metrix drops a second message of one user at the same time: two events
// of one user 1 ms apart, each with its auto-registration user message, must
// use four distinct times, and a retry keeps its times.
func TestMetrixGatewayGivesOneUsersMessagesDistinctTimes(t *testing.T) {
	emu := emulator.New(emulator.DemoConfig())
	v := emu.Vendor(emulator.MetrixGateway)
	srv := httptest.NewServer(v)
	defer srv.Close()
	s := newSink(t, emulator.MetrixGateway, emulator.BaseURL(emulator.MetrixGateway, srv.Listener.Addr().String()),
		map[string]string{"order_paid": "aewqd"}, map[string]any{"app_id": "demoapp", "api_key": "demo-api-key"})
	first := event(t, envelope.TypeTrack, envelope.Track{Name: "order_paid", User: user})
	second := event(t, envelope.TypeTrack, envelope.Track{Name: "order_paid", User: user},
		envelope.WithID("evt-2"), envelope.WithTime(occurred.Add(time.Millisecond)))
	for _, d := range []*Delivery{first, second, second} {
		if err := s.Deliver(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	times := map[string]int64{} // message id → time
	byTime := map[int64]string{}
	for _, r := range v.Requests() {
		var b struct {
			Messages []struct {
				ID   string `json:"id"`
				Time int64  `json:"time"`
			} `json:"messages"`
		}
		if err := json.Unmarshal(r.Body, &b); err != nil {
			t.Fatal(err)
		}
		for _, m := range b.Messages {
			if prev, ok := times[m.ID]; ok && prev != m.Time {
				t.Errorf("message %s sent at %d, then retried at %d", m.ID, prev, m.Time)
			}
			times[m.ID] = m.Time
			if other, ok := byTime[m.Time]; ok && other != m.ID {
				t.Errorf("messages %s and %s of one user at the same time %d", other, m.ID, m.Time)
			}
			byTime[m.Time] = m.ID
		}
	}
	if len(times) != 4 || times["evt-1"] != occurred.UnixMilli() || times["evt-2"] != occurred.UnixMilli()+1 {
		t.Errorf("times %v", times)
	}
}

// A user's record gives each message a millisecond of its own, in the
// user's order where there is room, and the same one again to a message
// it has seen.
func TestMetrixSlots(t *testing.T) {
	const T = int64(1_795_428_900_000)
	type op struct {
		want, recv int64
		id         uint64
		register   int64 // > 0: a registration below this millisecond
		at         int64 // the millisecond it must get
	}
	msg := func(want, recv int64, id uint64, at int64) op { return op{want: want, recv: recv, id: id, at: at} }
	reg := func(id uint64, below, at int64) op { return op{id: id, register: below, at: at} }
	tests := []struct {
		name string
		ops  []op
	}{
		{"a burst in one millisecond, in order", []op{msg(T, 1, 1, T), msg(T, 2, 2, T+1), msg(T, 3, 3, T+2)}},
		{"a burst pushes the next millisecond on", []op{msg(T, 1, 1, T), msg(T, 2, 2, T+1), msg(T+1, 3, 3, T+2), msg(T+5, 4, 4, T+5)}},
		{"registrations go below, not in the way", []op{msg(T, 1, 1, T), reg(101, T, T-1), msg(T+1, 2, 2, T+1), reg(102, T+1, T-2), msg(T+2, 3, 3, T+2), reg(103, T+2, T-3)}},
		{"out of order, with room: below the later one", []op{msg(T, 3, 3, T), msg(T, 1, 1, T-1)}},
		{"out of order, no room: distinct all the same", []op{msg(T, 3, 3, T), msg(T, 1, 1, T-1), msg(T, 2, 2, T+1)}},
		{"an earlier producer time keeps its own millisecond", []op{msg(T+5, 1, 1, T+5), msg(T, 2, 2, T)}},
		{"a message seen before takes its millisecond again", []op{msg(T, 1, 1, T), msg(T, 2, 2, T+1), msg(T, 1, 1, T), reg(101, T, T-1), reg(101, T+7, T-1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b metrixBook
			for i, o := range tt.ops {
				var at int64
				if o.register > 0 {
					at = b.registerBelow(metrixSlot{ID: o.id, Kind: metrixKindRegister}, o.register)
				} else {
					at = b.take(metrixSlot{Want: o.want, Recv: o.recv, ID: o.id, Kind: metrixKindMessage})
				}
				if at != o.at {
					t.Errorf("op %d got T%+d, want T%+d", i, at-T, o.at-T)
				}
			}
			r := b.slots
			back, err := decodeMetrixSlots(r.encode())
			if err != nil || len(back) != len(r) {
				t.Fatalf("round trip: %v, %d of %d", err, len(back), len(r))
			}
			for i := range r {
				if back[i] != r[i] {
					t.Errorf("round trip: %+v became %+v", r[i], back[i])
				}
			}
		})
	}
}

// A record forgets what is past its bounds, oldest first.
func TestMetrixSlotsTrim(t *testing.T) {
	const T = int64(1_795_428_900_000)
	var b metrixBook
	for i := range metrixSlotsMax + 10 {
		b.take(metrixSlot{Want: T, Recv: int64(i), ID: uint64(i), Kind: metrixKindMessage})
	}
	b.take(metrixSlot{Want: T + metrixSlotsHorizon + 100, ID: 1 << 40, Kind: metrixKindMessage})
	r := b.slots
	r.trim()
	if len(r) > metrixSlotsMax {
		t.Errorf("%d kept, at most %d", len(r), metrixSlotsMax)
	}
	for _, x := range r {
		if x.At < T+100 {
			t.Errorf("kept %+v, older than the horizon", x)
		}
	}
}

// A request naming a user by both ids works on the union of the two
// records: each message once, whichever record had it.
func TestMetrixSlotsMerge(t *testing.T) {
	msg := func(id uint64, at int64) metrixSlot { return metrixSlot{At: at, ID: id, Kind: metrixKindMessage} }
	reg := func(id uint64, at int64) metrixSlot { return metrixSlot{At: at, ID: id, Kind: metrixKindRegister} }
	tests := []struct {
		name string
		r, o metrixSlots
		want metrixSlots
	}{
		{name: "into nothing: a copy", o: metrixSlots{msg(1, 10), msg(2, 11)}, want: metrixSlots{msg(1, 10), msg(2, 11)}},
		{name: "nothing into a record", r: metrixSlots{msg(1, 10)}, want: metrixSlots{msg(1, 10)}},
		{name: "the union, each message once", r: metrixSlots{msg(1, 10), msg(2, 11)}, o: metrixSlots{msg(2, 11), msg(3, 12)},
			want: metrixSlots{msg(1, 10), msg(2, 11), msg(3, 12)}},
		{name: "a message and its registration are two", r: metrixSlots{msg(1, 10)}, o: metrixSlots{reg(1, 9)},
			want: metrixSlots{msg(1, 10), reg(1, 9)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := slices.Clone(tt.o)
			r := slices.Clone(tt.r)
			r.merge(o)
			if !slices.Equal(r, tt.want) {
				t.Errorf("got %+v, want %+v", r, tt.want)
			}
			// The record merged from is the store's: what is added to the
			// merge must not reach it.
			r = append(r[:0], msg(99, 99))
			if !slices.Equal(o, tt.o) {
				t.Errorf("the record merged from changed: %+v, was %+v", o, tt.o)
			}
		})
	}
}

// BenchmarkMetrixReservation is what a batched request does to its user's
// record (kvTimes.try): the record as remembered, full (256 messages),
// merged, 16 new messages each given a millisecond, trimmed and encoded to
// be written.
func BenchmarkMetrixReservation(b *testing.B) {
	const T = int64(1_795_428_900_000)
	var full metrixBook
	for i := range metrixSlotsMax {
		full.take(metrixSlot{Want: T + int64(i/4), Recv: int64(i), ID: uint64(i), Kind: metrixKindMessage})
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		var r metrixSlots
		r.merge(full.slots)
		book := metrixBook{slots: r}
		for j := range 16 {
			n := metrixSlotsMax + i*16 + j
			book.take(metrixSlot{Want: T + int64(n/4), Recv: int64(n), ID: uint64(n), Kind: metrixKindMessage})
		}
		r = book.slots
		r.trim()
		_ = r.encode()
	}
}
