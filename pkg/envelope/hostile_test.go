package envelope_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

// bad stands for bytes json.Marshal cannot write (it would replace invalid
// UTF-8): raw replaces it after marshalling.
const bad = "@BAD@"

// raw marshals m and puts the JSON text with in place of every bad.
func raw(t *testing.T, m map[string]any, with string) []byte {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.ReplaceAll(b, []byte(bad), []byte(with))
}

// assertRejected checks that Parse rejects raw naming every field in fields,
// and that the schema agrees unless schemaBlind (it cannot see bytes that
// JSON decoders replace with U+FFFD, nor count bytes rather than characters).
func assertRejected(t *testing.T, raw []byte, fields []string, schemaBlind bool) {
	t.Helper()
	_, err := envelope.Parse(raw, envelope.DefaultMaxBytes)
	var verr *envelope.ValidationError
	if !errors.As(err, &verr) {
		t.Fatalf("want a *ValidationError, got %v", err)
	}
	got := map[string]bool{}
	for _, v := range verr.Violations {
		got[v.Field] = true
	}
	for _, f := range fields {
		if !got[f] {
			t.Errorf("error does not name %q: %v", f, err)
		}
	}
	if len(err.Error()) > 4096 {
		t.Errorf("error is %d bytes long", len(err.Error()))
	}
	if !schemaBlind && schemaAccepts(t, compileSchema(t), raw) {
		t.Errorf("schema accepts what Parse rejects: %v", err)
	}
}

func TestParseRejectsHostileText(t *testing.T) {
	data := func(m map[string]any) map[string]any { return m["data"].(map[string]any) }
	user := func(m map[string]any) map[string]any { return data(m)["user"].(map[string]any) }
	tests := []struct {
		name        string
		edit        func(m map[string]any)
		with        string // what replaces bad in the JSON text
		fields      []string
		schemaBlind bool
	}{
		// Invalid UTF-8 in every attribute: the bytes of the 1,000 envelopes
		// that reached vendors with U+FFFD in their ids.
		{"id invalid UTF-8", func(m map[string]any) { m["id"] = "evt-" + bad }, "\xff\xfe", []string{"id"}, true},
		{"id truncated rune", func(m map[string]any) { m["id"] = "evt-" + bad }, "\xd8", []string{"id"}, true},
		{"id lone surrogate escape", func(m map[string]any) { m["id"] = "evt-" + bad }, `\ud800`, []string{"id"}, true},
		{"id low surrogate first", func(m map[string]any) { m["id"] = "evt-" + bad }, `\udc00\ud800`, []string{"id"}, true},
		{"specversion invalid UTF-8", func(m map[string]any) { m["specversion"] = "1.0" + bad }, "\x80", []string{"specversion"}, false},
		{"source invalid UTF-8", func(m map[string]any) { m["source"] = bad }, "\xc3\x28", []string{"source"}, true},
		{"type invalid UTF-8", func(m map[string]any) { m["type"] = "chapar.track" + bad }, "\xe2\x82", []string{"type"}, false},
		{"subject invalid UTF-8", func(m map[string]any) { m["subject"] = bad }, "\xff", []string{"subject"}, true},
		{"datacontenttype invalid UTF-8", func(m map[string]any) { m["datacontenttype"] = "application/json" + bad }, "\xff", []string{"datacontenttype"}, true},
		{"dataschema invalid UTF-8", func(m map[string]any) { m["dataschema"] = "https://x/" + bad }, "\xff", []string{"dataschema"}, true},
		{"destinations invalid UTF-8", func(m map[string]any) { m["destinations"] = "kenar," + bad }, "\xff", []string{"destinations"}, false},
		{"data.name invalid UTF-8", func(m map[string]any) { data(m)["name"] = "order" + bad }, "\xff", []string{"data.name"}, true},
		{"data.user.id invalid UTF-8", func(m map[string]any) { user(m)["id"] = bad }, "\xff", []string{"data.user.id"}, true},
		{"property value invalid UTF-8", func(m map[string]any) { data(m)["properties"].(map[string]any)["coupon"] = bad }, "\xff", []string{"data.properties.coupon"}, true},
		{"property array item lone surrogate", func(m map[string]any) { data(m)["properties"].(map[string]any)["tags"] = []string{"a", bad} }, `\udfff`, []string{"data.properties.tags[1]"}, true},
		{"property key invalid UTF-8", func(m map[string]any) { data(m)["properties"].(map[string]any)["k"+bad] = "v" }, "\xff", []string{"data.properties"}, true},

		// NUL, which JSON can only carry escaped.
		{"id NUL", func(m map[string]any) { m["id"] = "evt" + bad }, `\u0000`, []string{"id"}, false},
		{"source NUL", func(m map[string]any) { m["source"] = "shop" + bad + "api" }, `\u0000`, []string{"source"}, false},
		{"subject NUL", func(m map[string]any) { m["subject"] = bad }, `\u0000`, []string{"subject"}, false},
		{"dataschema NUL", func(m map[string]any) { m["dataschema"] = bad }, `\u0000`, []string{"dataschema"}, false},
		{"destinations NUL", func(m map[string]any) { m["destinations"] = "kenar" + bad }, `\u0000`, []string{"destinations"}, false},
		{"data.name NUL", func(m map[string]any) { data(m)["name"] = "order" + bad }, `\u0000`, []string{"data.name"}, true},
		{"data.user.id NUL", func(m map[string]any) { user(m)["id"] = "u" + bad }, `\u0000`, []string{"data.user.id"}, true},

		// Sizes.
		{"id over 256 bytes", func(m map[string]any) { m["id"] = strings.Repeat("i", 257) }, "", []string{"id"}, false},
		{"id over 256 bytes, under 256 characters", func(m map[string]any) { m["id"] = strings.Repeat("\u0633", 200) }, "", []string{"id"}, true},
		{"900 KB source", func(m map[string]any) { m["source"] = strings.Repeat("s", 900<<10) }, "", []string{"source"}, false},
		{"subject over 1 KiB", func(m map[string]any) { m["subject"] = strings.Repeat("u", 1025) }, "", []string{"subject"}, false},
		{"dataschema over 1 KiB", func(m map[string]any) { m["dataschema"] = strings.Repeat("d", 1025) }, "", []string{"dataschema"}, false},
		{"type over 1 KiB", func(m map[string]any) { m["type"] = strings.Repeat("t", 1025) }, "", []string{"type"}, false},

		// Destinations.
		{"33 destinations", func(m map[string]any) { m["destinations"] = strings.Repeat("kenar,", 32) + "kenar" }, "", []string{"destinations"}, true},
		{"destination not a sink name", func(m map[string]any) { m["destinations"] = "kenar, Chabok" }, "", []string{"destinations[1]"}, false},
		{"destination with a dot", func(m map[string]any) { m["destinations"] = "metrix.s2s" }, "", []string{"destinations[0]"}, false},
		{"destination too long", func(m map[string]any) { m["destinations"] = strings.Repeat("k", 64) }, "", []string{"destinations[0]"}, false},
		{"destinations over 4 KiB", func(m map[string]any) { m["destinations"] = "kenar" + strings.Repeat(" ", 4096) }, "", []string{"destinations"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustRead(t, "track.json")
			tt.edit(m)
			assertRejected(t, raw(t, m, tt.with), tt.fields, tt.schemaBlind)
		})
	}
}

func TestParseRejectsMalformedJSON(t *testing.T) {
	valid := string(mustReadRaw(t, "track.json"))
	tests := []string{
		``, `{`, `{"id"}`, `{"id":}`, `{"id":"a",}`, `{"id":"a"}x`, `{"id":"a"}{}`, `{,}`,
		`{"id":"a\x"}`, `{"id":"\u12"}`, `{"id":"a` + "\x01" + `"}`, `{"id":01}`, `{"id":-}`, `{"id":1.}`,
		`{"id":1e}`, `{"id":tru}`, `{"id":nul}`, `{"id":[1,]}`, `{"id":{"a":1,}}`, `{"id":"a"` + "\x00}",
		strings.Repeat("[", 20000), valid[:len(valid)/2], valid + ",", `"\0`, `"abc`, `tx`,
	}
	for i, raw := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if json.Valid([]byte(raw)) {
				t.Fatalf("test case %q is valid JSON", raw)
			}
			_, err := envelope.Parse([]byte(raw), 0)
			var verr *envelope.ValidationError
			if !errors.As(err, &verr) || len(verr.Violations) != 1 || verr.Violations[0].Field != "" {
				t.Fatalf("want one violation of the whole envelope, got %v", err)
			}
		})
	}
}

func TestParseRejectsRepeatedAttributes(t *testing.T) {
	raw := mustReadRaw(t, "track.json")
	raw = bytes.Replace(raw, []byte(`"specversion"`), []byte(`"id":"other","specversion"`), 1)
	assertRejected(t, raw, []string{"id"}, true)
	escaped := bytes.Replace(mustReadRaw(t, "track.json"), []byte(`"specversion"`), []byte(`"\u0069d":"other","specversion"`), 1)
	assertRejected(t, escaped, []string{"id"}, true)
}

func TestParseAcceptsUnicode(t *testing.T) {
	m := mustRead(t, "track.json")
	m["id"] = strings.Repeat("\u0633", 128) // 256 bytes
	m["subject"] = "\u06a9\u0627\u0631\u0628\u0631 \U0001F600"
	data := m["data"].(map[string]any)
	data["name"] = "\u062e\u0631\u06cc\u062f"
	b := raw(t, m, "")
	// Escaped forms, as Python's json.dumps writes them, surrogate pairs included.
	b = bytes.Replace(b, []byte("\U0001F600"), []byte(`\ud83d\ude00`), 1)
	b = bytes.Replace(b, []byte("\u062e"), []byte(`\u062E`), 1)
	ev, err := envelope.Parse(b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Subject != m["subject"] || ev.Track.Name != data["name"] || ev.ID != m["id"] {
		t.Errorf("decoded %q %q %q", ev.ID, ev.Subject, ev.Track.Name)
	}
}

func TestErrorsClipProducerValues(t *testing.T) {
	m := mustRead(t, "track.json")
	m["type"] = strings.Repeat("t", 1000)
	m["specversion"] = strings.Repeat("v", 1000)
	m["datacontenttype"] = strings.Repeat("c", 1000)
	data := m["data"].(map[string]any)
	for i := range 100 {
		data["properties"].(map[string]any)[fmt.Sprint("nested", i)] = map[string]any{}
	}
	_, err := envelope.Parse(raw(t, m, ""), 0)
	if err == nil || len(err.Error()) > 4096 {
		t.Fatalf("want a short error, got %d bytes: %v", len(err.Error()), err)
	}
	m = mustRead(t, "track.json")
	m["data"].(map[string]any)["x"+strings.Repeat("y", 10000)] = 1
	_, err = envelope.Parse(raw(t, m, ""), 0)
	if err == nil || len(err.Error()) > 1024 || !strings.Contains(err.Error(), "unknown field") {
		t.Fatalf("want a short unknown-field error, got %d bytes: %.200v", len(err.Error()), err)
	}
}

func TestParseMessageBinaryRejectsHostileText(t *testing.T) {
	const body = `{"name":"signup","user":{"id":"u1"}}`
	tests := []struct {
		name   string
		header string // the ce- header to set
		value  string
		body   string
		fields []string
	}{
		{"id invalid UTF-8", "ce-id", "evt-\xff", body, []string{"id"}},
		{"id NUL", "ce-id", "evt-\x00", body, []string{"id"}},
		{"id over 256 bytes", "ce-id", strings.Repeat("i", 257), body, []string{"id"}},
		{"source invalid UTF-8", "ce-source", "\xc3\x28", body, []string{"source"}},
		{"source 900 KB", "ce-source", strings.Repeat("s", 900<<10), body, []string{"source"}},
		{"subject NUL", "ce-subject", "u\x00", body, []string{"subject"}},
		{"dataschema invalid UTF-8", "ce-dataschema", "\xff", body, []string{"dataschema"}},
		{"type invalid UTF-8", "ce-type", "chapar.track\xff", body, []string{"type"}},
		{"destinations invalid UTF-8", "ce-destinations", "kenar,\xff", body, []string{"destinations"}},
		{"destinations NUL", "ce-destinations", "kenar\x00", body, []string{"destinations"}},
		{"destinations not sink names", "ce-destinations", "kenar,Chabok", body, []string{"destinations[1]"}},
		{"33 destinations", "ce-destinations", strings.Repeat("k,", 32) + "k", body, []string{"destinations"}},
		{"data.name invalid UTF-8", "ce-subject", "u1", `{"name":"sign` + "\xff" + `up","user":{"id":"u1"}}`, []string{"data.name"}},
		{"data.user.id NUL", "ce-subject", "u1", `{"name":"signup","user":{"id":"u\u0000"}}`, []string{"data.user.id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := nats.Header{}
			h.Set("ce-specversion", "1.0")
			h.Set("ce-id", "bin-1")
			h.Set("ce-source", "go-test")
			h.Set("ce-type", envelope.TypeTrack)
			h.Set("Content-Type", envelope.ContentTypeJSON)
			h.Set(tt.header, tt.value)
			_, err := envelope.ParseMessage(h, []byte(tt.body), envelope.DefaultMaxBytes)
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
					t.Errorf("error does not name %q: %.300v", f, err)
				}
			}
		})
	}
}
