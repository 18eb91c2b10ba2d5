package sinks

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Metrix legacy S2S in-app events (docs: metrix-s2s-inappevent).
//
//	POST http://analytics.metrix.ir/inappevent/{app_id}
//	Authorization: <dev key>
//
// Mapping: chapar.track and chapar.purchase → one in-app event whose
// eventSlug comes from the sink's events table (required: Metrix knows
// events only by dashboard slug). metrixUserId and metrixSessionId are
// required, and exactly one of idfa / advertisingId: both or neither is
// dead-lettered before any request. Properties split by type: numbers go to
// customMetrics (string→number), everything else, stringified, to
// customAttributes (string→string); a purchase adds its revenue to
// customMetrics and its currency to customAttributes. deviceIp is user.ip.
// eventTime is epoch ms by default (the English docs), or s (the Persian
// example) with event_time_unit: s.
//
// Responses (body shape unpublished; the code is searched for anywhere):
//
//	2xx            delivered
//	400            dead letter (malformed, e.g. both or neither device id)
//	401, 403       dead letter (wrong dev key, IP not allowed)
//	404            dead letter (unknown app or slug)
//	408, 429, 5xx  retry
const metrixS2SDefaultBaseURL = "http://analytics.metrix.ir"

type metrixS2SSettings struct {
	AppID         string        `yaml:"app_id"`
	DevKey        config.Secret `yaml:"dev_key"`
	EventTimeUnit string        `yaml:"event_time_unit"` // ms | s
}

type metrixS2S struct {
	name     string
	endpoint *endpoint // the event URL with the dev key
	settings metrixS2SSettings
	events   map[string]string
	client   *httpClient
}

func init() {
	Register(Spec[metrixS2SSettings]{
		Name:     "metrix-s2s",
		Summary:  "Metrix legacy S2S in-app events",
		Types:    []string{envelope.TypeTrack, envelope.TypePurchase},
		Defaults: func() metrixS2SSettings { return metrixS2SSettings{EventTimeUnit: "ms"} },
		Validate: func(s *metrixS2SSettings, at string) error {
			if err := required(at, "app_id", s.AppID, "dev_key", s.DevKey.Value()); err != nil {
				return err
			}
			if s.EventTimeUnit != "ms" && s.EventTimeUnit != "s" {
				return fmt.Errorf("%s.event_time_unit: is %q; use ms (default) or s", at, s.EventTimeUnit)
			}
			return nil
		},
		New: newMetrixS2S,
	})
}

func newMetrixS2S(cfg config.Sink, s metrixS2SSettings) (Sink, error) {
	base := cfg.BaseURL
	if base == "" {
		base = metrixS2SDefaultBaseURL
	}
	u := strings.TrimSuffix(base, "/") + "/inappevent/" + url.PathEscape(s.AppID)
	return &metrixS2S{
		name:     cfg.Name,
		endpoint: newEndpoint(u, "Authorization", s.DevKey.Value()),
		settings: s,
		events:   cfg.Events,
		client:   newHTTPClient(cfg),
	}, nil
}

type metrixS2SEvent struct {
	MetrixUserID     string                 `json:"metrixUserId"`
	MetrixSessionID  string                 `json:"metrixSessionId"`
	IDFA             string                 `json:"idfa,omitempty"`
	AdvertisingID    string                 `json:"advertisingId,omitempty"`
	CustomAttributes map[string]string      `json:"customAttributes,omitempty"`
	CustomMetrics    map[string]json.Number `json:"customMetrics,omitempty"`
	DeviceIP         string                 `json:"deviceIp,omitempty"`
	EventSlug        string                 `json:"eventSlug"`
	EventTime        int64                  `json:"eventTime"`
}

func (m *metrixS2S) request(d *Delivery) (*http.Request, error) {
	ev := d.Event
	var track *envelope.Track
	switch {
	case ev.Track != nil:
		track = ev.Track
	case ev.Purchase != nil:
		track = &ev.Purchase.Track
	default:
		return nil, reject(ReasonUnsupportedEvent, "Metrix S2S takes chapar.track and chapar.purchase, not %s", ev.Type)
	}
	slug, err := mapName(m.events, track.Name, true, m.name)
	if err != nil {
		return nil, err
	}
	u := track.User
	var missing []string
	if u.MetrixUserID == "" {
		missing = append(missing, "data.user.metrixUserId")
	}
	if u.MetrixSessionID == "" {
		missing = append(missing, "data.user.metrixSessionId")
	}
	if len(missing) > 0 {
		return nil, reject(ReasonInvalidForVendor, "Metrix S2S requires %s", strings.Join(missing, " and "))
	}
	if (u.IDFA == "") == (u.AdvertisingID == "") {
		return nil, reject(ReasonInvalidForVendor, "Metrix S2S needs exactly one of data.user.idfa (iOS) and data.user.advertisingId (Android); this event has %s",
			map[bool]string{true: "both", false: "neither"}[u.IDFA != ""])
	}
	t := ev.OccurredAt(d.ReceivedAt)
	body := metrixS2SEvent{
		MetrixUserID:    u.MetrixUserID,
		MetrixSessionID: u.MetrixSessionID,
		IDFA:            u.IDFA,
		AdvertisingID:   u.AdvertisingID,
		DeviceIP:        u.IP,
		EventSlug:       slug,
		EventTime:       t.UnixMilli(),
	}
	if m.settings.EventTimeUnit == "s" {
		body.EventTime = t.Unix()
	}
	for k, v := range track.Properties {
		if n, ok := v.(json.Number); ok {
			if body.CustomMetrics == nil {
				body.CustomMetrics = map[string]json.Number{}
			}
			body.CustomMetrics[k] = n
			continue
		}
		if body.CustomAttributes == nil {
			body.CustomAttributes = map[string]string{}
		}
		body.CustomAttributes[k] = stringify(v)
	}
	if p := ev.Purchase; p != nil {
		if body.CustomMetrics == nil {
			body.CustomMetrics = map[string]json.Number{}
		}
		if body.CustomAttributes == nil {
			body.CustomAttributes = map[string]string{}
		}
		body.CustomMetrics["revenue"] = p.Revenue
		body.CustomAttributes["currency"] = p.Currency
	}
	return m.endpoint.post(body)
}

func (m *metrixS2S) Deliver(ctx context.Context, d *Delivery) error {
	req, err := m.request(d)
	if err != nil {
		return err
	}
	return send(ctx, m.client, req, findCode)
}
