package sinks

import (
	"context"
	"fmt"

	"github.com/chapar-dev/chapar/internal/config"
)

// Kenar's subscription API, with the credentials and base URL of a
// configured kenar sink (`dispatcher kenar subscribe`):
//
//	POST https://open-api.divar.ir/v1/open-platform/events/subscriptions
//	{"event_type": "NEW_MESSAGE_ON_POST" | "POST_UPDATE",
//	 "event_resource_id": "<post token, empty = all>", "metadata": {}}
//
// Needs permission EVENTS_REGISTER_SUBSCRIPTION and a scope matching the
// event type. A subscription lives as long as the access token: subscribe
// again after a refresh.
//
// Kenar documents no call to list or delete subscriptions (the events API
// has only this one and send): a subscription ends with its access token.

// KenarSubscription is one subscription request.
type KenarSubscription struct {
	EventType       string         `json:"event_type"`
	EventResourceID string         `json:"event_resource_id"`
	Metadata        map[string]any `json:"metadata"`
}

// KenarSubscribe registers a subscription with the credentials and base
// URL of a configured kenar sink.
func KenarSubscribe(ctx context.Context, cfg config.Sink, sub KenarSubscription) error {
	if sub.EventType != "NEW_MESSAGE_ON_POST" && sub.EventType != "POST_UPDATE" {
		return fmt.Errorf("event type %q: use NEW_MESSAGE_ON_POST or POST_UPDATE", sub.EventType)
	}
	if sub.Metadata == nil {
		sub.Metadata = map[string]any{}
	}
	v, _ := Lookup("kenar")
	s, err := v.New(cfg, "settings")
	if err != nil {
		return err
	}
	k := s.(*kenar)
	req, err := jsonRequest(k.base+"/v1/open-platform/events/subscriptions", sub)
	if err != nil {
		return err
	}
	k.authorize(req)
	if err := send(ctx, k.client, req, kenarCode); err != nil {
		return fmt.Errorf("kenar subscribe: %w", err)
	}
	return nil
}
