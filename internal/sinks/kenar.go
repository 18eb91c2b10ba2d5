package sinks

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"

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
	client   *httpClient
}

func init() {
	Register(Spec[kenarSettings]{
		Name:    "kenar",
		Summary: "Divar Kenar: send event to a user or post",
		Types:   []string{envelope.TypeNotify},
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
