package emulator

import (
	"net/http"
	"slices"
	"strings"
)

// Vendor names of the two Metrix APIs.
const (
	MetrixS2S     = "metrix-s2s"
	MetrixGateway = "metrix-gateway"
)

func init() {
	Register(Handler{
		Name: MetrixS2S, Listen: "127.0.0.1:9102", New: newMetrixS2S,
		Demo: Settings{"app_id": "demoapp", "dev_key": "demo-dev-key"},
	})
	Register(Handler{
		Name: MetrixGateway, Listen: "127.0.0.1:9103", New: newMetrixGateway,
		Demo: Settings{"app_id": "demoapp", "api_key": "demo-api-key"},
	})
}

// MetrixFreePlanApp is an app whose plan lacks S2S: the gateway answers
// it 403 S2S_FEATURE_NOT_AVAILABLE whatever its key.
const MetrixFreePlanApp = "freeplan"

// metrixSlugs are the event slugs defined in the emulated "dashboard";
// others are 404 EVENT_TYPE_DOES_NOT_EXIST.
var metrixSlugs = []string{"aewqd", "pqrst", "rvnue", "signp"}

// metrixError is a guess at Metrix's unpublished error body; Chapar's
// parser must find the code wherever it is, so the emulator nests it.
func metrixError(a answer) any {
	return map[string]any{"status": a.status, "error": map[string]any{"code": a.code, "message": a.msg}}
}

func newMetrixS2S(s Settings) *Vendor {
	appID, devKey := setting(s, "app_id"), setting(s, "dev_key")
	return &Vendor{
		name:    MetrixS2S,
		okBody:  map[string]any{"status": "OK"},
		errBody: metrixError,
		validate: func(r *http.Request, body []byte) answer {
			app, found := strings.CutPrefix(r.URL.Path, "/inappevent/")
			if !found || r.Method != http.MethodPost {
				return fail(404, "NOT_FOUND", "no such endpoint")
			}
			if app != appID || r.Header.Get("Authorization") != devKey {
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
			if slug, _ := str(m, "eventSlug"); !slices.Contains(metrixSlugs, slug) {
				return fail(404, "EVENT_TYPE_DOES_NOT_EXIST", "no event with slug %q", slug)
			}
			return accepted()
		},
	}
}

func newMetrixGateway(s Settings) *Vendor {
	appID, apiKey := setting(s, "app_id"), setting(s, "api_key")
	return &Vendor{
		name:     MetrixGateway,
		okBody:   map[string]any{"status": "OK"},
		errBody:  metrixError,
		timeline: newTimeline(),
		validate: func(r *http.Request, body []byte) answer {
			if r.URL.Path != "/" || r.Method != http.MethodPost {
				return fail(404, "NOT_FOUND", "no such endpoint")
			}
			app := r.Header.Get("X-Application-Id")
			if app == MetrixFreePlanApp {
				return fail(403, "S2S_FEATURE_NOT_AVAILABLE", "S2S is not enabled for this application")
			}
			if app != appID || r.Header.Get("X-API-Key") != apiKey {
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
				if a := validateMetrixMessage(x); a.status != http.StatusOK {
					return a
				}
			}
			return accepted()
		},
	}
}

func validateMetrixMessage(x any) answer {
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
		if !slices.Contains(metrixSlugs, name) {
			return fail(404, "EVENT_TYPE_DOES_NOT_EXIST", "no event with slug %q", name)
		}
	default:
		return fail(400, "BAD_REQUEST", "message type must be user, action or revenue")
	}
	return accepted()
}
