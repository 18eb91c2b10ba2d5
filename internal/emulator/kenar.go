package emulator

import (
	"net/http"
	"strings"
)

// Kenar is the kenar vendor's emulator.
const Kenar = "kenar"

func init() {
	Register(Handler{
		Name: Kenar, Listen: "127.0.0.1:9104", New: newKenar,
		Demo: Settings{"api_key": "demo-kenar-key", "access_token": "demo-kenar-token"},
	})
}

// Kenar: google.rpc.Status errors {"code": <gRPC code>, "message", "details"}.
func newKenar(s Settings) *Vendor {
	apiKey, token := setting(s, "api_key"), setting(s, "access_token")
	grpc := map[int]int{400: 3, 401: 16, 403: 7, 404: 5, 429: 8, 500: 13, 503: 14}
	return &Vendor{
		name:   Kenar,
		okBody: map[string]any{},
		errBody: func(a answer) any {
			details := []any{}
			if a.code != "" {
				details = append(details, map[string]any{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": a.code, "domain": "open-api.divar.ir"})
			}
			return map[string]any{"code": grpc[a.status], "message": a.msg, "details": details}
		},
		validate: func(r *http.Request, body []byte) answer {
			if r.Method != http.MethodPost {
				return fail(404, "", "not found")
			}
			if r.Header.Get("X-API-Key") != apiKey {
				return fail(401, "", "invalid API key")
			}
			if r.Header.Get("Authorization") != "Bearer "+token {
				return fail(403, "", "access token lacks the required scope")
			}
			switch r.URL.Path {
			case "/experimental/open-platform/events/send":
				q := r.URL.Query()
				if q.Get("message") == "" {
					return fail(400, "", "message is required")
				}
				if t := q.Get("target_type"); t != "USER" && t != "POST" {
					return fail(400, "", "target_type must be USER or POST")
				}
				id := q.Get("target_resource_id")
				if id == "" {
					return fail(400, "", "target_resource_id is required")
				}
				// The emulator's stand-in for "not this user's post".
				if strings.HasPrefix(id, "missing") {
					return fail(404, "", "target %s not found", id)
				}
				return accepted()
			case "/v1/open-platform/events/subscriptions":
				m, ok := decodeObject(body)
				if !ok {
					return fail(400, "", "body must be a JSON object")
				}
				if t, _ := str(m, "event_type"); t != "NEW_MESSAGE_ON_POST" && t != "POST_UPDATE" {
					return fail(400, "", "event_type must be NEW_MESSAGE_ON_POST or POST_UPDATE")
				}
				if md, ok := m["metadata"]; ok {
					if _, isObj := md.(map[string]any); !isObj {
						return fail(400, "", "metadata must be an object")
					}
				}
				return accepted()
			}
			return fail(404, "", "not found")
		},
	}
}
