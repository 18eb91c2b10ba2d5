package sinks_test

import (
	"context"
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/testenv"
)

func TestKenarSubscribe(t *testing.T) {
	e := testenv.New(t)
	cfg := e.Sink("kenar", emulator.Kenar, nil, nil)
	err := sinks.KenarSubscribe(context.Background(), cfg, sinks.KenarSubscription{EventType: "POST_UPDATE", EventResourceID: "AaBb"})
	if err != nil {
		t.Fatal(err)
	}
	reqs := e.Emu.Vendor(emulator.Kenar).Requests()
	if len(reqs) != 1 || reqs[0].Path != "/v1/open-platform/events/subscriptions" || reqs[0].Status != 200 ||
		string(reqs[0].Body) != `{"event_type":"POST_UPDATE","event_resource_id":"AaBb","metadata":{}}` {
		t.Fatalf("requests %+v", reqs)
	}
	if err := sinks.KenarSubscribe(context.Background(), cfg, sinks.KenarSubscription{EventType: "NEW_MESSAGE"}); err == nil {
		t.Error("accepted an event type Kenar does not subscribe to")
	}
	bad := e.Sink("kenar", emulator.Kenar, nil, map[string]any{"access_token": "expired"})
	if err := sinks.KenarSubscribe(context.Background(), bad, sinks.KenarSubscription{EventType: "POST_UPDATE"}); err == nil ||
		!strings.Contains(err.Error(), "PERMISSION_DENIED") {
		t.Errorf("expired token: %v", err)
	}
}
