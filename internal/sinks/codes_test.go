package sinks

import "testing"

// Every shape the vendors' docs allow yields the vendor's code.
func TestVendorCodesInEveryDocumentedShape(t *testing.T) {
	for _, tt := range []struct {
		vendor string
		find   codeFinder
		body   string
		code   string
		msg    string
	}{
		{"chabok", chabokCode, `{"error":{"name":"Error","status":401,"message":"Authorization Required","code":"AUTHORIZATION_REQUIRED"}}`, "AUTHORIZATION_REQUIRED", "Authorization Required"},
		{"chabok", chabokCode, `{"error":{"name":"Error","status":500,"message":"dup","code":"ER_DUP_ENTRY"}}`, "ER_DUP_ENTRY", "dup"},
		{"chabok", chabokCode, `{"error":{"name":"Error","status":400,"message":"INVALID_EVENT: eventName is required"}}`, "INVALID_EVENT", "INVALID_EVENT: eventName is required"},
		{"chabok", chabokCode, `{"error":{"name":"ValidationError","status":422,"message":"The installation instance is not valid.","details":{"codes":{"userId":["presence"]}}}}`, "ValidationError", "The installation instance is not valid."},
		{"chabok", chabokCode, `{"error":{"name":"Error","status":404,"message":"Unknown \"installation\" id \"x\".","code":"MODEL_NOT_FOUND"}}`, "MODEL_NOT_FOUND", "Unknown \"installation\" id \"x\"."},
		{"chabok", chabokCode, `{"error":{"name":"Error","status":400,"message":"bad","code":4001}}`, "4001", "bad"},
		{"chabok", chabokCode, `{"error":{"name":"Error","status":502,"message":"upstream down"}}`, "", "upstream down"},
		{"chabok", chabokCode, `<html>502 Bad Gateway</html>`, "", "<html>502 Bad Gateway</html>"},
		{"kenar", kenarCode, `{"code":5,"message":"post not found","details":[]}`, "NOT_FOUND", "post not found"},
		{"kenar", kenarCode, `{"code":7,"message":"no","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"SCOPE_MISSING","domain":"open-api.divar.ir"}]}`, "SCOPE_MISSING", "no"},
		{"kenar", kenarCode, `{"code":404,"message":"post not found"}`, "NOT_FOUND", "post not found"},
		{"kenar", kenarCode, `{"code":429,"message":"quota"}`, "RESOURCE_EXHAUSTED", "quota"},
		{"kenar", kenarCode, `{"error":{"code":403,"message":"denied","status":"PERMISSION_DENIED"}}`, "PERMISSION_DENIED", "denied"},
		{"kenar", kenarCode, `{"code":"UNAUTHENTICATED","message":"bad key"}`, "UNAUTHENTICATED", "bad key"},
		{"kenar", kenarCode, `{"code":"16","message":"bad key"}`, "UNAUTHENTICATED", "bad key"},
		{"kenar", kenarCode, `{"code":0,"message":""}`, "", ""},
		{"kenar", kenarCode, `upstream connect error`, "", "upstream connect error"},
	} {
		code, msg := tt.find([]byte(tt.body))
		if code != tt.code || msg != tt.msg {
			t.Errorf("%s %s: %q, %q; want %q, %q", tt.vendor, tt.body, code, msg, tt.code, tt.msg)
		}
	}
}
