package sinks_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"net/http/httptest"

	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/sinks"
)

func TestWebhookTemplateReshapesTheBody(t *testing.T) {
	secret := newSecret(t)
	rc := &receiver{t: t, secrets: []string{secret}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	s := webhookSink(t, srv.URL, `
signing: {secrets: ["`+secret+`"]}
template: |
  {"event": {{json .data.name}}, "user": {{json .data.user.id}}, "id": {{json .id}},
   "order": {{json .data.properties.orderId}}, "coupon": {{json (index .data.properties "coupon")}},
   "trace": {{json .traceparent}}, "at": {{json .time}}}
`, nil)
	if err := s.Deliver(context.Background(), orderPaid(t)); err != nil {
		t.Fatal(err)
	}
	if rc.verified != 1 {
		t.Fatal("the templated body did not verify")
	}
	var got map[string]any
	if err := json.Unmarshal(rc.bodies[0], &got); err != nil {
		t.Fatalf("%s: %v", rc.bodies[0], err)
	}
	want := map[string]any{"event": "order_paid", "user": "u-1", "id": "evt-42", "order": "A-1", "coupon": nil,
		"trace": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "at": "2026-11-23T10:15:00Z"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %v, want %v (body %s)", k, got[k], v, rc.bodies[0])
		}
	}
	if ct := rc.got[0].Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
}

// A template that fails for one event is that event's permanent dead
// letter, invalid_for_vendor, found before any request.
func TestWebhookTemplateErrorIsInvalidForVendor(t *testing.T) {
	rc := &receiver{t: t}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	for name, tmpl := range map[string]string{
		"missing key": `{"revenue": {{json .data.revenue}}}`,
		"not JSON":    `event={{.data.name}}`,
		"bad call":    `{{index .data.user 3}}`,
	} {
		s := webhookSink(t, srv.URL, "template: '"+tmpl+"'", nil)
		err := s.Deliver(context.Background(), orderPaid(t))
		var e *sinks.Error
		if !errors.As(err, &e) || e.Transient || e.Reason != outcome.InvalidForVendor || !strings.Contains(e.Error(), "settings.template") {
			t.Errorf("%s: want invalid_for_vendor naming settings.template, got %v", name, err)
		}
	}
	if len(rc.got) != 0 {
		t.Errorf("%d requests sent for bodies that failed to render", len(rc.got))
	}
}
