package emulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"mime"
	"net/http"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
)

// Webhook is the webhook vendor's emulator: a team's receiver that
// verifies Standard Webhooks signatures with the specification's own Go
// library (not Chapar's code) and takes an event, or an array of them.
const Webhook = "webhook"

// webhookDemoSecret is whsec_ and the base64 of a 32-byte key.
const webhookDemoSecret = "whsec_Y2hhcGFyLWRlbW8td2ViaG9vay1zaWduaW5nLWtleSE="

func init() {
	Register(Handler{
		Name: Webhook, BasePath: "/hooks/chapar", Listen: "127.0.0.1:9105", New: newWebhook,
		// url is the receiver's real address; base_url replaces it.
		Demo: Settings{"url": "https://hooks.example.com/chapar", "signing": Settings{"secrets": []any{webhookDemoSecret}}},
	})
}

// The receiver answers:
//
//	2xx  {"received": n}                 a verified event, or n of them
//	400  BAD_REQUEST                      not JSON; a CloudEvent without id, source, type or specversion
//	401  INVALID_SIGNATURE                missing or wrong webhook-* headers, a stale timestamp
//	404  NOT_FOUND, 405 METHOD_NOT_ALLOWED
//
// errors as {"error": {"code", "message"}} (docs/sinks.md's example config
// reads code: /error/code). Without signing.secrets it takes any request.
func newWebhook(s Settings) *Vendor {
	var verifiers []*standardwebhooks.Webhook
	if signing, ok := s["signing"].(map[string]any); ok {
		secrets, _ := signing["secrets"].([]any)
		for _, sec := range secrets {
			if str, ok := sec.(string); ok {
				if wh, err := standardwebhooks.NewWebhook(str); err == nil {
					verifiers = append(verifiers, wh)
				}
			}
		}
	}
	return &Vendor{
		name:   Webhook,
		okBody: map[string]any{"received": 1},
		errBody: func(a answer) any {
			return map[string]any{"error": map[string]any{"code": a.code, "message": a.msg}}
		},
		validate: func(r *http.Request, body []byte) answer {
			if r.URL.Path != handlers[Webhook].BasePath {
				return fail(404, "NOT_FOUND", "no receiver at %s", r.URL.Path)
			}
			switch r.Method {
			case http.MethodPost, http.MethodPut, http.MethodPatch:
			default:
				return fail(405, "METHOD_NOT_ALLOWED", "%s is not accepted", r.Method)
			}
			if len(verifiers) > 0 && !verified(verifiers, body, r.Header) {
				return fail(401, "INVALID_SIGNATURE", "no webhook-signature matches a secret, or the timestamp is stale")
			}
			return webhookBody(r.Header.Get("Content-Type"), body)
		},
	}
}

// verified says whether any of the receiver's secrets verifies the
// request (a receiver mid-rotation holds two).
func verified(vs []*standardwebhooks.Webhook, body []byte, h http.Header) bool {
	for _, v := range vs {
		if v.Verify(body, h) == nil {
			return true
		}
	}
	return false
}

// webhookBody checks the body: JSON; a structured CloudEvent (or a batch of
// them) by its Content-Type must carry the required attributes.
func webhookBody(contentType string, body []byte) answer {
	var v any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return fail(400, "BAD_REQUEST", "body is not JSON")
	}
	items := []any{v}
	if list, ok := v.([]any); ok {
		items = list
	}
	mt, _, _ := mime.ParseMediaType(contentType)
	for _, it := range items {
		if err := cloudEvent(mt, it); err != nil {
			return fail(400, "BAD_REQUEST", "%v", err)
		}
	}
	a := accepted()
	a.body = map[string]any{"received": len(items)}
	return a
}

func cloudEvent(mediaType string, v any) error {
	if mediaType != "application/cloudevents+json" && mediaType != "application/cloudevents-batch+json" {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		return errors.New("a CloudEvent is a JSON object")
	}
	for _, k := range []string{"specversion", "id", "source", "type"} {
		if _, ok := str(m, k); !ok {
			return errors.New("a CloudEvent needs " + k)
		}
	}
	return nil
}
