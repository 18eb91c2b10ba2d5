package emulator

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
)

// Chabok is the chabok vendor's emulator.
const Chabok = "chabok"

func init() {
	Register(Handler{
		Name: Chabok, BasePath: "/api", Listen: "127.0.0.1:9101", New: newChabok,
		Demo: Settings{"app_id": "demoapp", "access_token": "demo-chabok-token"},
	})
}

// Chabok: LoopBack 3 errors {"error":{"name","status","message","code"}}.
func newChabok(s Settings) *Vendor {
	token := setting(s, "access_token")
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
			if r.Header.Get("X-Access-Token") != token {
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
