package deliveries

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"
)

// AppendJSON is encoding/json's output read back: every field, every
// omission, any string (escapes, control characters, invalid UTF-8).
func TestAppendJSONReadsBackAsEncodingJSON(t *testing.T) {
	at := time.Date(2026, 12, 6, 16, 31, 1, 909201042, time.UTC)
	for _, r := range []Record{
		{},
		{EventID: "evt-1", Sink: "chabok", State: Delivered, At: at, Attempts: 1, Latency: 4500 * time.Microsecond, Stream: "CHAPAR_EVENTS", Seq: 1, Origin: 1},
		{EventID: "evt-2", Type: "chapar.track", Subject: "user-42", Name: "order_paid", Sink: "gateway", State: Retrying, At: at.In(time.FixedZone("IRST", 12600)),
			Attempts: 3, Status: 503, Code: "SERVICE_UNAVAILABLE", Error: "transient failure: HTTP 503: \"busy\"\n\tretry later \\ <b>&</b>",
			NextAttempt: at.Add(time.Minute), Stream: "CHAPAR_EVENTS_3", Seq: 77, Origin: 3<<56 | 77, Replays: 2},
		{EventID: "id with \x00 NUL, \x1f, \u2028 and \xff\xfe bad bytes", Sink: "s", State: DeadLettered, At: at, Attempts: 7,
			Reason: "vendor_rejected", DeadLetter: 1234, Error: "ünïcödé ✓ 漢字 \x7f"},
	} {
		got := r.AppendJSON(nil)
		if !json.Valid(got) {
			t.Fatalf("not JSON: %s", got)
		}
		var back, want Record
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatal(err)
		}
		std, _ := json.Marshal(r)
		if err := json.Unmarshal(std, &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(back, want) || !back.At.Equal(want.At) {
			t.Errorf("AppendJSON read back:\n%+v\nencoding/json read back:\n%+v\n(%s)", back, want, got)
		}
		var keysA, keysB map[string]any
		_ = json.Unmarshal(got, &keysA)
		_ = json.Unmarshal(std, &keysB)
		if len(keysA) != len(keysB) {
			t.Errorf("fields: %d, encoding/json writes %d:\n%s\n%s", len(keysA), len(keysB), got, std)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range []string{"", "plain", "quote\"back\\slash", "\x00\x01\n\t", "\xff", "ü\u2028", "<&>"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := appendString(nil, s)
		var back string
		if err := json.Unmarshal(got, &back); err != nil {
			t.Fatalf("%q → %s: %v", s, got, err)
		}
		std, _ := json.Marshal(s)
		var want string
		_ = json.Unmarshal(std, &want)
		if back != want {
			t.Fatalf("%q read back as %q, encoding/json's as %q", s, back, want)
		}
	})
}

func BenchmarkRecordJSON(b *testing.B) {
	r := Record{EventID: "01a24c1c-f2e4-762f-8de4-6de0f1d52088", Type: "chapar.track", Subject: "user-42", Name: "order_paid",
		Sink: "chabok", State: Delivered, At: time.Now(), Attempts: 1, Latency: 4 * time.Millisecond, Stream: "CHAPAR_EVENTS", Seq: 123456, Origin: 123456}
	b.Run("encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(r)
		}
	})
	b.Run("append", func(b *testing.B) {
		b.ReportAllocs()
		buf := make([]byte, 0, 512)
		for b.Loop() {
			buf = r.AppendJSON(buf[:0])
		}
	})
}
