package sinks

// Vendor conformance review (branch h-vendors): the Metrix gateway's two
// 403s read alike.
//
// DEFECT (red until fixed): Metrix documents its errors as a pair, the
// HTTP kind and the error's own code (vendor-docs/metrix-gateway-s2s.fa.txt,
// error table: "FORBIDDEN: 403 | S2S_FEATURE_NOT_AVAILABLE", "FORBIDDEN:
// 403 | INVALID_PARAMETERS", "NOT_FOUND: 404 | EVENT_TYPE_DOES_NOT_EXIST"),
// and does not publish the body's shape (README: "find the code
// defensively"). findCode takes the first UPPER_SNAKE string under code,
// error or status, so a body carrying both, with the kind under one of
// those keys and the code under another, yields the kind: both documented
// 403s dead-letter as "HTTP 403 FORBIDDEN", and the operator cannot tell a
// plan without S2S from a wrong key or IP (docs/sinks.md promises
// 403 S2S_FEATURE_NOT_AVAILABLE and 403 INVALID_PARAMETERS). A body whose
// only code is its message (NestJS's shape) yields no code at all.

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

func TestReviewMetrixGatewayReportsTheErrorsOwnCodeNotItsKind(t *testing.T) {
	d := event(t, envelope.TypeTrack, envelope.Track{Name: "order_paid", User: user})
	for _, tc := range []struct {
		status int
		body   string
		code   string
	}{
		{403, `{"status":"FORBIDDEN","code":"S2S_FEATURE_NOT_AVAILABLE"}`, "S2S_FEATURE_NOT_AVAILABLE"}, // passes already
		{403, `{"error":"FORBIDDEN","type":"S2S_FEATURE_NOT_AVAILABLE","message":"S2S is not enabled"}`, "S2S_FEATURE_NOT_AVAILABLE"},
		{403, `{"code":"FORBIDDEN","type":"INVALID_PARAMETERS"}`, "INVALID_PARAMETERS"},
		{403, `{"status":"FORBIDDEN","error":{"reason":"INVALID_PARAMETERS"}}`, "INVALID_PARAMETERS"},
		{404, `{"status":404,"error":"NOT_FOUND","errorType":"EVENT_TYPE_DOES_NOT_EXIST"}`, "EVENT_TYPE_DOES_NOT_EXIST"},
		{403, `{"statusCode":403,"message":"S2S_FEATURE_NOT_AVAILABLE","error":"Forbidden"}`, "S2S_FEATURE_NOT_AVAILABLE"},
		{400, `{"status":"BAD_REQUEST","message":"messages must not be empty"}`, "BAD_REQUEST"}, // the kind is the only code: kept
	} {
		t.Run(tc.body, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			s := newSink(t, "metrix-gateway", srv.URL, map[string]string{"order_paid": "aewqd"}, map[string]any{"app_id": "a", "api_key": "k"})
			checkOutcome(t, s.Deliver(context.Background(), d), &want{reason: ReasonVendorRejected, status: tc.status, code: tc.code})
		})
	}
}
