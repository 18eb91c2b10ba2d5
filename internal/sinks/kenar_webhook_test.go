package sinks_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

func TestKenarWebhookAuthenticatesDeduplicatesAndRoutes(t *testing.T) {
	e := testenv.New(t)
	d := e.Start([]config.Sink{e.Sink("gateway", emulator.MetrixGateway, map[string]string{"kenar.new_message": "aewqd"}, nil)},
		[]config.Route{{Names: []string{"kenar.*"}, Sinks: []string{"gateway"}}})
	// A second sink's consumer that takes nothing keeps the event in the
	// (interest-retained) stream for inspection.
	if _, err := e.Topo.EnsureSink(context.Background(), e.JS, "keep", topology.ConsumerSettings{AckWait: time.Minute, MaxAckPending: 10}); err != nil {
		t.Fatal(err)
	}
	hook := sinks.NewKenarWebhook(envelope.NewPublisher(e.JS), config.Secret("id-key-1"), "divar-kenar", e.Log)
	srv := httptest.NewServer(hook)
	defer srv.Close()
	body := `{"type":"NEW_MESSAGE","metadata":{"app_slug":"shop","user_id":"kenar-user-9"},"new_message":{"id":"m-1","text":"is it available?","sender":{"id":"s-1"}}}`
	post := func(auth, b string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(b))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, auth := range []string{"", "id-key-2", "Bearer id-key-1", "id-key-"} {
		if got := post(auth, body); got != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d, want 401", auth, got)
		}
	}
	if got := post("id-key-1", "not json"); got != http.StatusBadRequest {
		t.Errorf("bad body: %d", got)
	}
	for range 3 { // Kenar sends duplicates
		if got := post("id-key-1", body); got != http.StatusOK {
			t.Fatalf("valid call: %d", got)
		}
	}
	testenv.Eventually(t, 10*time.Second, "the notification delivered onward", func() bool { return d.Tally.DeliveredTo("gateway") == 1 })
	s, _ := e.JS.Stream(context.Background(), e.Topo.EventsStream())
	info, _ := s.Info(context.Background())
	if info.State.Msgs != 1 {
		t.Errorf("events stream holds %d messages; duplicates must be dropped", info.State.Msgs)
	}
	msg, err := s.GetMsg(context.Background(), info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := envelope.Parse(msg.Data, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Source != "divar-kenar" || ev.Track.Name != "kenar.new_message" || ev.Track.User.ID != "kenar-user-9" {
		t.Errorf("envelope %+v %+v", ev.Envelope, ev.Track)
	}
	if ev.Track.Properties["new_message.text"] != "is it available?" || ev.Track.Properties["new_message.sender.id"] != "s-1" {
		t.Errorf("properties %v", ev.Track.Properties)
	}
}

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
