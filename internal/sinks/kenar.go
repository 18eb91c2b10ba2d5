package sinks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Divar Kenar open platform (docs: divar-kenar-events-api).
//
// Send event to a user (EXPERIMENTAL: the vendor's newest published spec no
// longer lists this call):
//
//	POST https://open-api.divar.ir/experimental/open-platform/events/send
//	     ?message=…&target_type=USER|POST&target_resource_id=…   (no body)
//	X-API-Key: <api key>                  (permission EVENTS_SEND)
//	Authorization: Bearer <access token>  (OAuth scope SEND_EVENT)
//
// Mapping: chapar.notify → message, target.type, target.id. Button titles
// must be 5–50 characters; a notify with a bad title is dead-lettered before
// any request. The documented call takes no buttons, so none are sent.
//
// Responses are google.rpc.Status {"code": n, "message": …, "details": […]};
// the code reported is an ErrorInfo reason when present, else the gRPC name.
//
//	2xx            delivered
//	400            dead letter (INVALID_ARGUMENT)
//	401, 403       dead letter (UNAUTHENTICATED, PERMISSION_DENIED: key or scope)
//	404            dead letter (NOT_FOUND: user or post)
//	408, 429, 5xx  retry (429: per-minute limit or daily quota spent)
const kenarDefaultBaseURL = "https://open-api.divar.ir"

type kenarSettings struct {
	APIKey      config.Secret `yaml:"api_key"`
	AccessToken config.Secret `yaml:"access_token"`
}

type kenar struct {
	name     string
	base     string
	settings kenarSettings
	client   *http.Client
}

func init() {
	Register(Spec[kenarSettings]{
		Name:    "kenar",
		Summary: "Divar Kenar: send event to a user or post",
		Validate: func(s *kenarSettings, at string) error {
			return required(at, "api_key", s.APIKey.Value(), "access_token", s.AccessToken.Value())
		},
		New: newKenar,
	})
}

func newKenar(cfg config.Sink, s kenarSettings) (Sink, error) {
	base := cfg.BaseURL
	if base == "" {
		base = kenarDefaultBaseURL
	}
	return &kenar{name: cfg.Name, base: strings.TrimSuffix(base, "/"), settings: s, client: newHTTPClient(cfg)}, nil
}

func (k *kenar) Name() string { return k.name }

func (k *kenar) request(d *Delivery) (*http.Request, error) {
	n := d.Event.Notify
	if n == nil {
		return nil, reject(ReasonUnsupportedEvent, "Kenar takes chapar.notify, not %s", d.Event.Type)
	}
	for i, b := range n.Buttons {
		if l := utf8.RuneCountInString(b.Title); l < 5 || l > 50 {
			return nil, reject(ReasonInvalidForVendor, "data.buttons[%d].title is %d characters; Kenar requires 5 to 50", i, l)
		}
	}
	q := url.Values{}
	q.Set("message", n.Message)
	q.Set("target_type", n.Target.Type)
	q.Set("target_resource_id", n.Target.ID)
	req, err := http.NewRequest(http.MethodPost, k.base+"/experimental/open-platform/events/send?"+q.Encode(), http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	k.authorize(req)
	return req, nil
}

func (k *kenar) authorize(req *http.Request) {
	req.Header.Set("Accept", "application/json")
	req.Header.Set("X-API-Key", k.settings.APIKey.Value())
	req.Header.Set("Authorization", "Bearer "+k.settings.AccessToken.Value())
}

func (k *kenar) Deliver(ctx context.Context, d *Delivery) error {
	req, err := k.request(d)
	if err != nil {
		return err
	}
	return send(ctx, k.client, req, kenarCode)
}

// kenarCode reads a google.rpc.Status body {"code", "message", "details"}
// (or the same under "error", as Google's JSON APIs wrap it) in every shape
// it comes in: an ErrorInfo reason in details first; else a status name
// ("status": "NOT_FOUND"); else the code: a gRPC code number mapped to its
// name, an HTTP status in that field mapped to the gRPC name it stands for,
// or a name written as a string. Anything else is searched as for every
// vendor.
func kenarCode(body []byte) (code, message string) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var top map[string]any
	if dec.Decode(&top) != nil || top == nil {
		return findCode(body)
	}
	st := top
	if e, ok := top["error"].(map[string]any); ok {
		st = e
	}
	message, _ = st["message"].(string)
	details, _ := st["details"].([]any)
	for _, d := range details {
		if m, ok := d.(map[string]any); ok {
			if r, ok := m["reason"].(string); ok && r != "" {
				return r, message
			}
		}
	}
	if s, ok := st["status"].(string); ok && looksLikeCode(s) {
		return s, message
	}
	var n int64 = -1
	switch c := st["code"].(type) {
	case json.Number:
		if i, err := c.Int64(); err == nil {
			n = i
		}
	case string:
		if looksLikeCode(c) {
			return c, message
		}
		if i, err := strconv.ParseInt(c, 10, 64); err == nil {
			n = i
		}
	}
	if name := grpcCodeName(n); name != "" {
		return name, message
	}
	if name := grpcForHTTP(n); name != "" {
		return name, message
	}
	code, msg := findCode(body)
	if message == "" {
		message = msg
	}
	return code, message
}

// grpcForHTTP is the gRPC code an HTTP status stands for (google.rpc.Code's
// HTTP mapping), for a Status whose code field carries the HTTP status.
func grpcForHTTP(status int64) string {
	switch status {
	case 400:
		return "INVALID_ARGUMENT"
	case 401:
		return "UNAUTHENTICATED"
	case 403:
		return "PERMISSION_DENIED"
	case 404:
		return "NOT_FOUND"
	case 409:
		return "ABORTED"
	case 412:
		return "FAILED_PRECONDITION"
	case 416:
		return "OUT_OF_RANGE"
	case 429:
		return "RESOURCE_EXHAUSTED"
	case 499:
		return "CANCELLED"
	case 500:
		return "INTERNAL"
	case 501:
		return "UNIMPLEMENTED"
	case 503:
		return "UNAVAILABLE"
	case 504:
		return "DEADLINE_EXCEEDED"
	}
	return ""
}

func grpcCodeName(n int64) string {
	names := [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
		"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
		"OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}
	if n <= 0 || n >= int64(len(names)) {
		return ""
	}
	return names[n]
}

// --- Subscriptions -------------------------------------------------------
//
//	POST https://open-api.divar.ir/v1/open-platform/events/subscriptions
//	{"event_type": "NEW_MESSAGE_ON_POST" | "POST_UPDATE",
//	 "event_resource_id": "<post token, empty = all>", "metadata": {}}
//
// Needs permission EVENTS_REGISTER_SUBSCRIPTION and a scope matching the
// event type. A subscription lives as long as the access token: subscribe
// again after a refresh.

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

// --- Webhooks ------------------------------------------------------------
//
// Kenar calls the app's webhook URL with header Authorization: <the
// identification key from the panel> (a static secret; no signature) and a
// body {"type": "NEW_MESSAGE" | "NEW_CHATBOT_MESSAGE" |
// "USER_ACCESS_REVOCATION" | "POST_UPDATE" | "PAYMENT_TRANSACTION",
// "metadata": {…}, "<payload>": {…}}.
//
// Each notification becomes a chapar.track envelope named kenar.<type in
// lower case> (kenar.new_message, …) whose properties are the body's values
// flattened to dotted keys, so Kenar events route to other sinks like any
// producer's. Kenar delivers duplicates: the envelope id is a hash of the
// body, so JetStream drops a repeat within the duplicate window.

// EventPublisher is what the webhook needs from JetStream.
type EventPublisher interface {
	Publish(ctx context.Context, env *envelope.Envelope) (*jetstream.PubAck, error)
}

// KenarWebhook serves the endpoint Kenar calls back.
type KenarWebhook struct {
	pub    EventPublisher
	key    []byte
	source string
	log    *zap.Logger
}

// NewKenarWebhook checks Authorization against key and publishes through pub.
func NewKenarWebhook(pub EventPublisher, key config.Secret, source string, log *zap.Logger) *KenarWebhook {
	return &KenarWebhook{pub: pub, key: []byte(key.Value()), source: source, log: log}
}

func (h *KenarWebhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	// Constant time, so the key cannot be guessed byte by byte.
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), h.key) != 1 {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, envelope.DefaultMaxBytes+1))
	if err != nil || len(body) > envelope.DefaultMaxBytes {
		http.Error(w, "body unreadable or over 1 MiB", http.StatusRequestEntityTooLarge)
		return
	}
	env, err := KenarNotificationEnvelope(body, h.source)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ack, err := h.pub.Publish(r.Context(), env)
	if err != nil {
		// Kenar retries a failed call; nothing is lost by refusing it.
		h.log.Error("kenar webhook: publish failed", zap.Error(err))
		http.Error(w, "could not store the event; retry", http.StatusServiceUnavailable)
		return
	}
	h.log.Info("kenar webhook accepted", zap.String("event_id", env.ID), zap.Bool("duplicate", ack.Duplicate))
	w.WriteHeader(http.StatusOK)
}

// KenarNotificationEnvelope turns a webhook body into a chapar.track
// envelope (see above).
func KenarNotificationEnvelope(body []byte, source string) (*envelope.Envelope, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var n map[string]any
	if err := dec.Decode(&n); err != nil || n == nil {
		return nil, fmt.Errorf("body is not a JSON object")
	}
	typ, _ := n["type"].(string)
	if typ == "" {
		return nil, fmt.Errorf("body has no type")
	}
	props := map[string]any{}
	flatten("", n, props)
	userID := "kenar"
	for _, k := range []string{"metadata.user_id", "user_id", "new_chatbot_message.sender.id", "new_message.sender.id", "sender.id"} {
		if v, ok := props[k].(string); ok && v != "" {
			userID = v
			break
		}
	}
	sum := sha256.Sum256(body)
	return envelope.New(envelope.TypeTrack, source, envelope.Track{
		Name:       "kenar." + strings.ToLower(typ),
		Properties: props,
		User:       envelope.User{ID: userID},
	}, envelope.WithID("kenar-"+hex.EncodeToString(sum[:16])))
}

// flatten turns nested objects into dotted keys; arrays of scalars stay,
// other arrays become JSON text.
func flatten(prefix string, v any, out map[string]any) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			flatten(key, c, out)
		}
	case []any:
		for _, c := range x {
			switch c.(type) {
			case string, bool, json.Number:
			default:
				out[prefix] = stringify(x)
				return
			}
		}
		out[prefix] = x
	case nil:
	default:
		if prefix != "" {
			out[prefix] = x
		}
	}
}
