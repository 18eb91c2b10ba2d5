package envelope_test

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

const (
	traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	tracestate  = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"
)

func TestExtensionsSurviveParse(t *testing.T) {
	m := mustRead(t, "track.json")
	m["traceparent"] = traceparent
	m["tracestate"] = tracestate
	m["partitionkey"] = "user-42"
	m["sampled"] = true
	m["priority"] = 5
	m["comexampleextension1"] = nil // null: absent
	want := map[string]string{
		"traceparent": traceparent, "tracestate": tracestate,
		"partitionkey": "user-42", "sampled": "true", "priority": "5",
	}
	ev, err := envelope.Parse(raw(t, m, ""), 0)
	if err != nil {
		t.Fatal(err)
	}
	assertExtensions(t, &ev.Envelope, want)

	// They pass through: Marshal writes them and Parse reads them back.
	b, err := ev.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	again, err := envelope.Parse(b, 0)
	if err != nil {
		t.Fatalf("re-parse %s: %v", b, err)
	}
	assertExtensions(t, &again.Envelope, want)
	if !schemaAccepts(t, compileSchema(t), b) {
		t.Errorf("schema rejects %s", b)
	}
}

func TestExtensionsSurviveParseMessageBinary(t *testing.T) {
	h := nats.Header{}
	h.Set("ce-specversion", "1.0")
	h.Set("ce-id", "bin-1")
	h.Set("ce-source", "go-test")
	h.Set("ce-type", envelope.TypeTrack)
	h.Set("ce-traceparent", traceparent)
	h.Set("ce-tracestate", tracestate)
	h.Set("ce-partitionkey", "user-42")
	h.Set("Content-Type", envelope.ContentTypeJSON)
	h.Set("Nats-Msg-Id", "bin-1") // not a ce- header: not an extension
	ev, err := envelope.ParseMessage(h, []byte(`{"name":"signup","user":{"id":"u1"}}`), 0)
	if err != nil {
		t.Fatal(err)
	}
	assertExtensions(t, &ev.Envelope, map[string]string{
		"traceparent": traceparent, "tracestate": tracestate, "partitionkey": "user-42",
	})
}

func TestNewWithExtension(t *testing.T) {
	env, err := envelope.New(envelope.TypeTrack, "shop", envelope.Track{Name: "x", User: envelope.User{ID: "u1"}},
		envelope.WithExtension("traceparent", traceparent))
	if err != nil {
		t.Fatal(err)
	}
	b, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ev, err := envelope.Parse(b, 0)
	if err != nil || ev.Traceparent() != traceparent {
		t.Fatalf("round trip of %s: %v %v", b, ev, err)
	}
	for _, name := range []string{"Trace", "id", ""} {
		_, err := envelope.New(envelope.TypeTrack, "shop", envelope.Track{Name: "x", User: envelope.User{ID: "u1"}},
			envelope.WithExtension(name, "v"))
		if err == nil {
			t.Errorf("New accepted extension %q", name)
		}
	}
	bad := &envelope.Envelope{SpecVersion: "1.0", Extensions: map[string]string{`a","id":"x`: "v"}}
	if b, err := bad.Marshal(); err == nil {
		t.Errorf("Marshal wrote %s", b)
	}
}

func assertExtensions(t *testing.T, env *envelope.Envelope, want map[string]string) {
	t.Helper()
	if len(env.Extensions) != len(want) {
		t.Errorf("extensions %v, want %v", env.Extensions, want)
	}
	for k, v := range want {
		if env.Extensions[k] != v {
			t.Errorf("extension %s = %q, want %q", k, env.Extensions[k], v)
		}
	}
	if env.Traceparent() != want["traceparent"] || env.Tracestate() != want["tracestate"] {
		t.Errorf("Traceparent %q Tracestate %q", env.Traceparent(), env.Tracestate())
	}
}

func TestExtensionRejects(t *testing.T) {
	tests := []struct {
		name        string
		edit        func(m map[string]any)
		with        string
		fields      []string
		schemaBlind bool
	}{
		{"upper case name", func(m map[string]any) { m["traceParent"] = traceparent }, "", []string{"traceParent"}, false},
		{"name with a dash", func(m map[string]any) { m["trace-parent"] = traceparent }, "", []string{"trace-parent"}, false},
		{"name with an underscore", func(m map[string]any) { m["trace_parent"] = traceparent }, "", []string{"trace_parent"}, false},
		{"name over 64 bytes", func(m map[string]any) { m[strings.Repeat("x", 65)] = "v" }, "", []string{strings.Repeat("x", 64)}, false},
		{"name invalid UTF-8", func(m map[string]any) { m["x"+bad] = "v" }, "\xff", []string{"x\uFFFD"}, false},
		{"data_base64", func(m map[string]any) { m["data_base64"] = "AAAA" }, "", []string{"data_base64"}, false},
		{"object value", func(m map[string]any) { m["trace"] = map[string]any{"a": 1} }, "", []string{"trace"}, false},
		{"array value", func(m map[string]any) { m["trace"] = []int{1} }, "", []string{"trace"}, false},
		{"fraction", func(m map[string]any) { m["priority"] = 1.5 }, "", []string{"priority"}, false},
		{"integer over 32 bits", func(m map[string]any) { m["priority"] = int64(1) << 40 }, "", []string{"priority"}, false},
		{"value over 1 KiB", func(m map[string]any) { m["tracestate"] = strings.Repeat("s", 1025) }, "", []string{"tracestate"}, false},
		{"value NUL", func(m map[string]any) { m["tracestate"] = "a" + bad }, `\u0000`, []string{"tracestate"}, false},
		{"value invalid UTF-8", func(m map[string]any) { m["tracestate"] = "a" + bad }, "\xff", []string{"tracestate"}, true},
		{"33 extensions", func(m map[string]any) {
			for i := range 33 {
				m[fmt.Sprint("ext", i)] = "v"
			}
		}, "", []string{"ext9"}, true}, // the 33rd in document order: json.Marshal sorts keys
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustRead(t, "track.json")
			tt.edit(m)
			assertRejected(t, raw(t, m, tt.with), tt.fields, tt.schemaBlind)
		})
	}
}

func TestExtensionRepeated(t *testing.T) {
	b := bytes.Replace(mustReadRaw(t, "track.json"), []byte(`"specversion"`), []byte(`"traceparent":"a","traceparent":"b","specversion"`), 1)
	assertRejected(t, b, []string{"traceparent"}, true)
}

func TestBinaryExtensionRejects(t *testing.T) {
	tests := []struct {
		name   string
		edit   func(h nats.Header)
		fields []string
	}{
		{"upper case name", func(h nats.Header) { h.Set("ce-traceParent", traceparent) }, []string{"traceParent"}},
		{"name with a dash", func(h nats.Header) { h.Set("ce-trace-parent", traceparent) }, []string{"trace-parent"}},
		{"empty name", func(h nats.Header) { h.Set("ce-", "x") }, []string{""}},
		{"value NUL", func(h nats.Header) { h.Set("ce-tracestate", "a\x00") }, []string{"tracestate"}},
		{"value invalid UTF-8", func(h nats.Header) { h.Set("ce-tracestate", "a\xff") }, []string{"tracestate"}},
		{"value over 1 KiB", func(h nats.Header) { h.Set("ce-tracestate", strings.Repeat("s", 1025)) }, []string{"tracestate"}},
		{"two ce-id headers", func(h nats.Header) { h.Add("ce-id", "other") }, []string{"id"}},
		{"two extension headers", func(h nats.Header) { h.Add("ce-trace", "a"); h.Add("ce-trace", "b") }, []string{"trace"}},
		{"33 extensions", func(h nats.Header) {
			for i := range 33 {
				h.Set(fmt.Sprint("ce-ext", i), "v")
			}
		}, []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := nats.Header{}
			h.Set("ce-specversion", "1.0")
			h.Set("ce-id", "bin-1")
			h.Set("ce-source", "go-test")
			h.Set("ce-type", envelope.TypeTrack)
			tt.edit(h)
			_, err := envelope.ParseMessage(h, []byte(`{"name":"signup","user":{"id":"u1"}}`), 0)
			var verr *envelope.ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("want a *ValidationError, got %v", err)
			}
			got := map[string]bool{}
			for _, v := range verr.Violations {
				got[v.Field] = true
			}
			for _, f := range tt.fields {
				if !got[f] {
					t.Errorf("error does not name %q: %v", f, err)
				}
			}
		})
	}
}
