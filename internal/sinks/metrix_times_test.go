package sinks

import (
	"context"
	"encoding/json"
	"net/http/httptest"
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
