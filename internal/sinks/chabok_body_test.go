package sinks

import (
	"bytes"
	"encoding/json"
	"testing"
)

// checkChabokBody holds appendJSON to its promise: encoding/json's bytes,
// or a refusal (and then jsonRequest marshals). It reports whether the
// fast path wrote the body.
func checkChabokBody(t *testing.T, body bodyAppender) bool {
	t.Helper()
	got, ok := body.appendJSON(nil)
	want, err := json.Marshal(body)
	if !ok {
		return false
	}
	if err != nil {
		t.Fatalf("appendJSON wrote %s, json.Marshal refuses it: %v", got, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("appendJSON:   %s\njson.Marshal: %s", got, want)
	}
	return true
}

func TestChabokBodyIsEncodingJSONs(t *testing.T) {
	plain := []chabokEvent{
		{InstallationID: "inst-9f2c", EventName: "order_paid", EventTime: 1764000000000, EventData: map[string]any{
			"orderId": "A-1001", "items": json.Number("3"), "firstOrder": true, "paidAt": "2026-11-23T10:14:58Z",
			"categories": []any{"books", "games", json.Number("-1.5e3"), false}, "empty": []any{}, "کلید": "مقدار ✓",
		}},
		{UserID: "user-42", EventName: "purchase", EventTime: -1, Revenue: json.Number("250000"), Currency: "IRR"},
		{EventName: "", EventTime: 0},
		{EventName: "x", EventData: map[string]any{}}, // empty: omitted
		{EventName: "DEL \x7f and ~ are written as they are"},
	}
	for _, e := range plain {
		if !checkChabokBody(t, e) {
			t.Errorf("fast path declined %+v", e)
		}
	}
	if !checkChabokBody(t, chabokEvents(plain)) || !checkChabokBody(t, chabokEvents{}) || !checkChabokBody(t, chabokEvents(nil)) {
		t.Error("fast path declined a bulk body")
	}
	declined := []chabokEvent{
		{EventName: `a "quote"`},
		{EventName: `back\slash`},
		{EventName: "<script>"},
		{EventName: "a & b"},
		{EventName: "tab\there"},
		{EventName: "\xff invalid"},
		{EventName: "line\u2028separator"},
		{EventName: "x", EventData: map[string]any{"k<": "v"}},
		{EventName: "x", EventData: map[string]any{"n": json.Number("01")}},
		{EventName: "x", EventData: map[string]any{"n": json.Number("")}}, // encoding/json writes 0
		{EventName: "x", EventData: map[string]any{"n": json.Number(" 1")}},
		{EventName: "x", EventData: map[string]any{"n": nil}},
		{EventName: "x", EventData: map[string]any{"n": 1.5}},
		{EventName: "x", EventData: map[string]any{"n": map[string]any{}}},
		{EventName: "x", EventData: map[string]any{"n": []any{[]any{}}}},
		{EventName: "x", EventData: map[string]any{"n": []any(nil)}},
		{EventName: "x", Revenue: json.Number("1e")},
	}
	for _, e := range declined {
		if checkChabokBody(t, e) {
			t.Errorf("fast path wrote %+v, which is json.Marshal's to write", e)
		}
		if checkChabokBody(t, chabokEvents{plain[0], e}) {
			t.Errorf("fast path wrote a bulk body with %+v", e)
		}
	}
}

func FuzzChabokBody(f *testing.F) {
	f.Add("inst", "order_paid", "key", "value", "12.5", int64(1764000000000))
	f.Add("", "<b>", "k\u2028", "\xff", "-0", int64(-1))
	f.Add("کاربر", "名前", "\"", "\\", "1E+2", int64(0))
	f.Fuzz(func(t *testing.T, id, name, key, value, number string, at int64) {
		e := chabokEvent{InstallationID: id, EventName: name, EventTime: at, Revenue: json.Number(number),
			EventData: map[string]any{key: value, "n": json.Number(number), "a": []any{value, json.Number(number), true}}}
		checkChabokBody(t, e)
		checkChabokBody(t, chabokEvents{e, e})
	})
}

// BenchmarkChabokBody compares, in the same run, the body written by
// appendJSON with json.Marshal's, for one track item and a trackBulk of
// 1,000.
//
//	go test -run '^$' -bench ChabokBody -benchmem -count 6 ./internal/sinks/
func BenchmarkChabokBody(b *testing.B) {
	e := chabokEvent{InstallationID: "inst-9f2c", EventName: "order_paid", EventTime: 1764000000000, EventData: map[string]any{
		"orderId": "A-1001", "items": json.Number("3"), "firstOrder": true, "paidAt": "2026-11-23T10:14:58Z",
		"categories": []any{"books", "games"}}}
	bulk := make(chabokEvents, 1000)
	for i := range bulk {
		bulk[i] = e
	}
	for _, bc := range []struct {
		name string
		body bodyAppender
	}{{"track", e}, {"bulk1000", bulk}} {
		b.Run(bc.name+"/encoding-json", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := json.Marshal(bc.body); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name+"/append", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, ok := bc.body.appendJSON(make([]byte, 0, 384)); !ok {
					b.Fatal("declined")
				}
			}
		})
	}
}
