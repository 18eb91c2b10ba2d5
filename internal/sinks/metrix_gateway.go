package sinks

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Metrix gateway, the unified S2S entry point (docs: metrix-gateway-s2s).
//
//	POST https://entry.metrix.ir/
//	X-Application-Id: <app id>
//	X-API-Key: <api key>
//
// Mapping: chapar.identify → a "user" message, chapar.track → "action",
// chapar.purchase → "revenue". Each message's id is the envelope id, so the
// vendor's de-duplication makes retries and replays harmless. customUserId
// is user.id, metrixUserId is sent when present; one of them is required.
// Action and revenue names are dashboard slugs from the events table
// (required). Attributes are stringified (the vendor takes string→string).
// Currency must be IRR, USD or EUR. Metrix counts a user's actions only once
// the user is registered, so by default every action and revenue request
// carries an empty "user" message first (id <envelope id>:user): harmless
// for a known user, and it makes the first delivery for a new one count.
// Metrix drops a user's second message at one time after a 2xx, so every
// message's time is one of the user's own (metrix_times.go).
//
// Responses (body shape unpublished; the code is searched for anywhere):
//
//	2xx                             delivered
//	400 BAD_REQUEST                 dead letter (malformed data)
//	403 S2S_FEATURE_NOT_AVAILABLE   dead letter (S2S not in the plan or app)
//	403 INVALID_PARAMETERS          dead letter (wrong API key, IP not allowed)
//	404 EVENT_TYPE_DOES_NOT_EXIST   dead letter (unknown slug)
//	408, 429, 5xx                   retry
const metrixGatewayDefaultBaseURL = "https://entry.metrix.ir/"

type metrixGatewaySettings struct {
	AppID  string        `yaml:"app_id"`
	APIKey config.Secret `yaml:"api_key"`
	// AutoRegisterUser prepends a user message to action and revenue
	// requests (default true).
	AutoRegisterUser *bool `yaml:"auto_register_user"`
}

type metrixGateway struct {
	name     string
	endpoint *endpoint // the base URL with the gateway's authentication
	settings metrixGatewaySettings
	register bool
	events   map[string]string
	client   *httpClient
	parallel int             // requests at once within one batch
	times    metrixTimeStore // the times each user's messages took (metrix_times.go)
}

func init() {
	Register(Spec[metrixGatewaySettings]{
		Name:    "metrix-gateway",
		Summary: "Metrix gateway: user, action and revenue messages",
		Types:   []string{envelope.TypeIdentify, envelope.TypeTrack, envelope.TypePurchase},
		Validate: func(s *metrixGatewaySettings, at string) error {
			return required(at, "app_id", s.AppID, "api_key", s.APIKey.Value())
		},
		New:     newMetrixGateway,
		Batches: true,
	})
}

func newMetrixGateway(cfg config.Sink, s metrixGatewaySettings) (Sink, error) {
	u := cfg.BaseURL
	if u == "" {
		u = metrixGatewayDefaultBaseURL
	}
	return &metrixGateway{
		name:     cfg.Name,
		endpoint: newEndpoint(u, "X-Application-Id", s.AppID, "X-API-Key", s.APIKey.Value()),
		settings: s,
		register: s.AutoRegisterUser == nil || *s.AutoRegisterUser,
		events:   cfg.Events,
		client:   newHTTPClient(cfg),
		parallel: max(cfg.Concurrency, 1),
		times:    &memTimes{},
	}, nil
}

// Attach keeps the users' times in JetStream, where every replica sees
// them. Called once, before the first delivery.
func (m *metrixGateway) Attach(ctx context.Context, st State) error {
	kv, err := openKVTimes(ctx, st)
	if err != nil {
		return err
	}
	m.times = kv
	return nil
}

type metrixGatewayBody struct {
	CustomUserID string          `json:"customUserId,omitempty"`
	MetrixUserID string          `json:"metrixUserId,omitempty"`
	Messages     []metrixMessage `json:"messages"`
}

type metrixMessage struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Time int64  `json:"time"` // given by stamp, distinct for the user

	want int64 // the event's time (or receipt time), ms
	recv int64 // the receipt time, ns

	// action and revenue
	Name       string            `json:"name,omitempty"`
	Attributes map[string]string `json:"attributes,omitempty"`
	Revenue    json.Number       `json:"revenue,omitempty"`
	Currency   string            `json:"currency,omitempty"`

	// user
	FirstName         string            `json:"firstName,omitempty"`
	LastName          string            `json:"lastName,omitempty"`
	PhoneNumber       string            `json:"phoneNumber,omitempty"`
	HashedPhoneNumber string            `json:"hashedPhoneNumber,omitempty"`
	Email             string            `json:"email,omitempty"`
	HashedEmail       string            `json:"hashedEmail,omitempty"`
	Country           string            `json:"country,omitempty"`
	City              string            `json:"city,omitempty"`
	Region            string            `json:"region,omitempty"`
	Locality          string            `json:"locality,omitempty"`
	Gender            string            `json:"gender,omitempty"`
	Birthday          int64             `json:"birthday,omitempty"`
	Channels          []string          `json:"channels,omitempty"`
	CustomAttributes  map[string]string `json:"customAttributes,omitempty"`
}

func (m *metrixGateway) request(ctx context.Context, d *Delivery) (*http.Request, error) {
	body, msg, err := m.message(d)
	if err != nil {
		return nil, err
	}
	msgs := []metrixMessage{msg}
	reg, err := m.stamp(ctx, body, msgs)
	if err != nil {
		return nil, err
	}
	if reg != nil {
		body.Messages = append(body.Messages, *reg)
	}
	body.Messages = append(body.Messages, msgs...)
	return m.post(body)
}

// stamp gives msgs, one user's messages in one request in the user's
// order, their times, and returns the empty user message that registers
// the user first (nil when not wanted: auto_register_user off, or the
// request starts with the user's own message). See metrix_times.go.
func (m *metrixGateway) stamp(ctx context.Context, body metrixGatewayBody, msgs []metrixMessage) (*metrixMessage, error) {
	var reg *metrixMessage
	if m.register && msgs[0].Type != "user" {
		reg = &metrixMessage{Type: "user", ID: msgs[0].ID + ":user"}
	}
	err := m.times.reserve(ctx, metrixUserKeys(m.settings.AppID, body), func(r *metrixBook) {
		first := int64(maxInt64)
		for i := range msgs {
			msgs[i].Time = r.take(metrixSlot{Want: msgs[i].want, Recv: msgs[i].recv, ID: metrixIDHash(msgs[i].ID), Kind: metrixKindMessage})
			first = min(first, msgs[i].Time)
		}
		if reg != nil {
			reg.Time = r.registerBelow(metrixSlot{Want: msgs[0].want, Recv: msgs[0].recv, ID: metrixIDHash(reg.ID), Kind: metrixKindRegister}, first)
		}
	})
	switch {
	case err == nil:
		return reg, nil
	case ctx.Err() != nil:
		return nil, fmt.Errorf("metrix gateway: %w", err) // our own shutdown: handed back
	default:
		// Sending without a time of its own could be dropped after a 2xx:
		// better a retry than a silent loss.
		return nil, &Error{Reason: ReasonRetriesExhausted, Transient: true, Message: "could not reserve the user's message times", Err: err}
	}
}

// message maps a delivery to its one message, and the body it goes in
// (the user's ids, no messages yet).
func (m *metrixGateway) message(d *Delivery) (metrixGatewayBody, metrixMessage, error) {
	ev := d.Event
	if ev.Notify != nil {
		return metrixGatewayBody{}, metrixMessage{}, reject(ReasonUnsupportedEvent, "the Metrix gateway takes chapar.identify, chapar.track and chapar.purchase, not %s", ev.Type)
	}
	user := ev.EventUser()
	if user.ID == "" && user.MetrixUserID == "" {
		return metrixGatewayBody{}, metrixMessage{}, reject(ReasonInvalidForVendor, "the Metrix gateway needs data.user.id (customUserId) or data.user.metrixUserId")
	}
	at := ev.OccurredAt(d.ReceivedAt).UnixMilli()
	recv := d.ReceivedAt.UnixNano()
	body := metrixGatewayBody{CustomUserID: user.ID, MetrixUserID: user.MetrixUserID}
	switch {
	case ev.Identify != nil:
		msg, err := metrixUserMessage(ev.ID, at, ev.Identify.Traits)
		msg.want, msg.recv = at, recv
		return body, msg, err
	case ev.Track != nil, ev.Purchase != nil:
		track := ev.Track
		if track == nil {
			track = &ev.Purchase.Track
		}
		slug, err := mapName(m.events, track.Name, true, m.name)
		if err != nil {
			return body, metrixMessage{}, err
		}
		msg := metrixMessage{Type: "action", ID: ev.ID, Time: at, Name: slug, Attributes: stringMap(track.Properties)}
		if p := ev.Purchase; p != nil {
			if !slices.Contains([]string{"IRR", "USD", "EUR"}, p.Currency) {
				return body, metrixMessage{}, reject(ReasonInvalidForVendor, "the Metrix gateway takes currency IRR, USD or EUR, not %q", p.Currency)
			}
			msg = metrixMessage{Type: "revenue", ID: ev.ID, Time: at, Name: slug, Revenue: p.Revenue, Currency: p.Currency}
		}
		msg.want, msg.recv = at, recv
		return body, msg, nil
	default:
		return body, metrixMessage{}, reject(ReasonUnsupportedEvent, "the Metrix gateway takes chapar.identify, chapar.track and chapar.purchase, not %s", ev.Type)
	}
}

// post builds an authenticated request of body.
func (m *metrixGateway) post(body metrixGatewayBody) (*http.Request, error) {
	return m.endpoint.post(body)
}

func metrixUserMessage(id string, at int64, t envelope.Traits) (metrixMessage, error) {
	msg := metrixMessage{
		Type: "user", ID: id, Time: at,
		FirstName: t.FirstName, LastName: t.LastName,
		PhoneNumber: t.PhoneNumber, HashedPhoneNumber: t.HashedPhoneNumber,
		Email: t.Email, HashedEmail: t.HashedEmail,
		Country: t.Country, City: t.City, Region: t.Region, Locality: t.Locality,
		Gender: t.Gender, Channels: t.Channels,
		CustomAttributes: stringMap(t.CustomAttributes),
	}
	if t.Birthday != "" {
		b, err := envelope.ParseDate(t.Birthday)
		if err != nil {
			return msg, reject(ReasonInvalidForVendor, "data.traits.birthday: %v", err)
		}
		msg.Birthday = b.UnixMilli()
	}
	return msg, nil
}

func stringMap(m map[string]any) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = stringify(v)
	}
	return out
}

func (m *metrixGateway) Deliver(ctx context.Context, d *Delivery) error {
	req, err := m.request(ctx, d)
	if err != nil {
		return err
	}
	return send(ctx, m.client, req, findCode)
}
