package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
)

// Chabok: LoopBack 3 errors {"error":{"name","status","message","code"}}.
func newChabok(cfg Config) *Vendor {
	return &Vendor{
		name:   Chabok,
		okBody: map[string]any{"count": 1},
		errBody: func(a answer) any {
			return map[string]any{"error": map[string]any{"name": "Error", "status": a.status, "message": a.msg, "code": a.code}}
		},
		validate: func(r *http.Request, body []byte) answer {
			purchase, bulk := false, false
			switch r.URL.Path {
			case "/api/installations/track":
			case "/api/installations/trackPurchase":
				purchase = true
			case "/api/installations/trackBulk":
				bulk = true
			default:
				return fail(404, "MODEL_NOT_FOUND", "Shared class \"installations\" has no method handling %s %s", r.Method, r.URL.Path)
			}
			if r.Method != http.MethodPost {
				return fail(404, "MODEL_NOT_FOUND", "no method handling %s", r.Method)
			}
			if r.Header.Get("X-Access-Token") != cfg.ChabokAccessToken {
				return fail(401, "AUTHORIZATION_REQUIRED", "Authorization Required")
			}
			if bulk {
				return chabokBulk(body)
			}
			m, ok := decodeObject(body)
			if !ok {
				return fail(400, "BAD_REQUEST", "body must be a JSON object")
			}
			return chabokItem(m, purchase)
		},
	}
}

// chabokBulk is trackBulk: a JSON array of 1 to ChabokMaxBulk track items,
// answered {"queued": true, "n": N}. The docs give no per-item results:
// one invalid item refuses the request whole.
func chabokBulk(body []byte) answer {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var items []map[string]any
	if err := dec.Decode(&items); err != nil || len(items) == 0 {
		return fail(400, "BAD_REQUEST", "body must be a non-empty JSON array of track items")
	}
	if len(items) > ChabokMaxBulk {
		return fail(400, "BAD_REQUEST", "at most %d items per request, not %d", ChabokMaxBulk, len(items))
	}
	for i, m := range items {
		if m == nil {
			return fail(400, "INVALID_EVENT", "item %d must be an object", i)
		}
		if a := chabokItem(m, false); a.status != http.StatusOK {
			a.msg = fmt.Sprintf("item %d: %s", i, a.msg)
			return a
		}
	}
	a := accepted()
	a.body = map[string]any{"queued": true, "n": len(items)}
	return a
}

// ChabokMaxBulk is the most items trackBulk takes.
const ChabokMaxBulk = 1000

// chabokItem validates one track or trackPurchase item.
func chabokItem(m map[string]any, purchase bool) answer {
	_, inst := str(m, "installationId")
	_, user := str(m, "userId")
	if inst == user {
		return fail(400, "INVALID_IDENTITY", "exactly one of installationId and userId is required")
	}
	if _, ok := str(m, "eventName"); !ok {
		return fail(400, "INVALID_EVENT", "eventName is required")
	}
	if t, ok := m["eventTime"]; ok && !looksLikeMillis(t) {
		return fail(400, "INVALID_EVENT", "eventTime must be epoch milliseconds")
	}
	if d, ok := m["eventData"]; ok {
		data, ok := d.(map[string]any)
		if !ok {
			return fail(400, "INVALID_EVENT", "eventData must be an object")
		}
		for k, v := range data {
			if !typedValue(v) {
				return fail(400, "INVALID_EVENT", "eventData.%s must be a string, bool, number or array", k)
			}
		}
	}
	if purchase && !isNumber(m["revenue"]) {
		return fail(400, "INVALID_EVENT", "revenue must be a number")
	}
	if c, ok := m["currency"]; ok && (!purchase || !isString(c)) {
		return fail(400, "INVALID_EVENT", "currency must be a string on trackPurchase")
	}
	return accepted()
}

func isString(v any) bool { _, ok := v.(string); return ok }

func typedValue(v any) bool {
	switch x := v.(type) {
	case string, bool:
		return true
	case []any:
		for _, i := range x {
			if !typedValue(i) {
				return false
			}
		}
		return true
	default:
		return isNumber(v)
	}
}

// metrixError is a guess at Metrix's unpublished error body; Chapar's
// parser must find the code wherever it is, so the emulator nests it.
func metrixError(a answer) any {
	return map[string]any{"status": a.status, "error": map[string]any{"code": a.code, "message": a.msg}}
}

func newMetrixS2S(cfg Config) *Vendor {
	return &Vendor{
		name:    MetrixS2S,
		okBody:  map[string]any{"status": "OK"},
		errBody: metrixError,
		validate: func(r *http.Request, body []byte) answer {
			app, found := strings.CutPrefix(r.URL.Path, "/inappevent/")
			if !found || r.Method != http.MethodPost {
				return fail(404, "NOT_FOUND", "no such endpoint")
			}
			if app != cfg.MetrixS2SAppID || r.Header.Get("Authorization") != cfg.MetrixS2SDevKey {
				return fail(403, "INVALID_PARAMETERS", "app id or dev key is wrong")
			}
			m, ok := decodeObject(body)
			if !ok {
				return fail(400, "BAD_REQUEST", "body must be a JSON object")
			}
			for _, k := range []string{"metrixUserId", "metrixSessionId", "eventSlug"} {
				if _, ok := str(m, k); !ok {
					return fail(400, "BAD_REQUEST", "%s is required", k)
				}
			}
			_, idfa := str(m, "idfa")
			_, adid := str(m, "advertisingId")
			if idfa == adid {
				return fail(400, "BAD_REQUEST", "exactly one of idfa and advertisingId is required")
			}
			if a, ok := m["customAttributes"]; ok && !stringMap(a) {
				return fail(400, "BAD_REQUEST", "customAttributes must be string to string")
			}
			if c, ok := m["customMetrics"]; ok && !numberMap(c) {
				return fail(400, "BAD_REQUEST", "customMetrics must be string to number")
			}
			if t, ok := m["eventTime"]; ok && !isInt(t) {
				return fail(400, "BAD_REQUEST", "eventTime must be a timestamp")
			}
			if slug, _ := str(m, "eventSlug"); !slices.Contains(cfg.MetrixSlugs, slug) {
				return fail(404, "EVENT_TYPE_DOES_NOT_EXIST", "no event with slug %q", slug)
			}
			return accepted()
		},
	}
}

func newMetrixGateway(cfg Config) *Vendor {
	return &Vendor{
		name:    MetrixGateway,
		okBody:  map[string]any{"status": "OK"},
		errBody: metrixError,
		validate: func(r *http.Request, body []byte) answer {
			if r.URL.Path != "/" || r.Method != http.MethodPost {
				return fail(404, "NOT_FOUND", "no such endpoint")
			}
			app := r.Header.Get("X-Application-Id")
			if app != "" && app == cfg.MetrixS2SDisabledAppID {
				return fail(403, "S2S_FEATURE_NOT_AVAILABLE", "S2S is not enabled for this application")
			}
			if app != cfg.MetrixAppID || r.Header.Get("X-API-Key") != cfg.MetrixAPIKey {
				return fail(403, "INVALID_PARAMETERS", "application id or API key is wrong")
			}
			m, ok := decodeObject(body)
			if !ok {
				return fail(400, "BAD_REQUEST", "body must be a JSON object")
			}
			_, cu := str(m, "customUserId")
			_, mu := str(m, "metrixUserId")
			if !cu && !mu {
				return fail(400, "BAD_REQUEST", "customUserId or metrixUserId is required")
			}
			msgs, ok := m["messages"].([]any)
			if !ok || len(msgs) == 0 {
				return fail(400, "BAD_REQUEST", "messages must be a non-empty array")
			}
			for _, x := range msgs {
				if a := validateMetrixMessage(x, cfg); a.status != http.StatusOK {
					return a
				}
			}
			return accepted()
		},
	}
}

func validateMetrixMessage(x any, cfg Config) answer {
	msg, ok := x.(map[string]any)
	if !ok {
		return fail(400, "BAD_REQUEST", "each message must be an object")
	}
	if _, ok := str(msg, "id"); !ok {
		return fail(400, "BAD_REQUEST", "message id is required")
	}
	if !looksLikeMillis(msg["time"]) {
		return fail(400, "BAD_REQUEST", "message time must be epoch milliseconds")
	}
	typ, _ := str(msg, "type")
	switch typ {
	case "user":
		if g, ok := msg["gender"]; ok && !slices.Contains([]any{"Male", "Female", "Other"}, g) {
			return fail(400, "BAD_REQUEST", "gender must be Male, Female or Other")
		}
		if c, ok := msg["channels"]; ok {
			list, ok := c.([]any)
			if !ok {
				return fail(400, "BAD_REQUEST", "channels must be an array")
			}
			for _, ch := range list {
				if !slices.Contains([]any{"SMS", "Push", "Email"}, ch) {
					return fail(400, "BAD_REQUEST", "channels hold SMS, Push or Email")
				}
			}
		}
		if b, ok := msg["birthday"]; ok && !isInt(b) {
			return fail(400, "BAD_REQUEST", "birthday must be epoch milliseconds")
		}
		if a, ok := msg["customAttributes"]; ok && !stringMap(a) {
			return fail(400, "BAD_REQUEST", "customAttributes must be string to string")
		}
	case "action", "revenue":
		name, ok := str(msg, "name")
		if !ok {
			return fail(400, "BAD_REQUEST", "name is required")
		}
		if typ == "action" {
			if a, ok := msg["attributes"]; ok && !stringMap(a) {
				return fail(400, "BAD_REQUEST", "attributes must be string to string")
			}
		} else {
			if !isNumber(msg["revenue"]) {
				return fail(400, "BAD_REQUEST", "revenue must be a number")
			}
			if !slices.Contains([]any{"IRR", "USD", "EUR"}, msg["currency"]) {
				return fail(400, "BAD_REQUEST", "currency must be IRR, USD or EUR")
			}
		}
		if !slices.Contains(cfg.MetrixSlugs, name) {
			return fail(404, "EVENT_TYPE_DOES_NOT_EXIST", "no event with slug %q", name)
		}
	default:
		return fail(400, "BAD_REQUEST", "message type must be user, action or revenue")
	}
	return accepted()
}

// Kenar: google.rpc.Status errors {"code": <gRPC code>, "message", "details"}.
func newKenar(cfg Config) *Vendor {
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
			if r.Header.Get("X-API-Key") != cfg.KenarAPIKey {
				return fail(401, "", "invalid API key")
			}
			if r.Header.Get("Authorization") != "Bearer "+cfg.KenarAccessToken {
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
