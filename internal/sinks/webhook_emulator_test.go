package sinks

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"

	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// The webhook sink against the emulated receiver, which verifies with the
// Standard Webhooks library: one event, a batch, and a sink whose secret
// the receiver does not hold.
func TestWebhookAgainstTheEmulator(t *testing.T) {
	emu := emulator.New(emulator.DemoConfig())
	v := emu.Vendor(emulator.Webhook)
	srv := httptest.NewServer(v)
	defer srv.Close()
	base := emulator.BaseURL(emulator.Webhook, srv.Listener.Addr().String())
	d := event(t, envelope.TypeTrack, envelope.Track{Name: "order_paid", User: envelope.User{ID: "u-1"}})

	s := newSink(t, emulator.Webhook, base, nil, emulator.DemoSettings(emulator.Webhook))
	if err := s.Deliver(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	var ds []*Delivery
	for i := range 5 {
		ds = append(ds, track(t, fmt.Sprint("e", i), "order_paid", "u", occurred))
	}
	for i, err := range s.(BatchSink).DeliverBatch(context.Background(), ds) {
		if err != nil {
			t.Errorf("batch item %d: %v", i, err)
		}
	}
	if v.Count(200) != 2 {
		t.Errorf("receiver accepted %d requests, want 2: %+v", v.Count(200), v.Requests())
	}

	other := emulator.DemoSettings(emulator.Webhook)
	other["signing"] = map[string]any{"secrets": []any{"whsec_" + "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="}}
	err := newSink(t, emulator.Webhook, base, nil, other).Deliver(context.Background(), d)
	checkOutcome(t, err, &want{reason: ReasonVendorRejected, status: 401, code: "INVALID_SIGNATURE"})
}
