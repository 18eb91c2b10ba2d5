package envelope_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

func compileSchema(t testing.TB) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(envelope.Schema()))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func schemaAccepts(t *testing.T, s *jsonschema.Schema, raw []byte) bool {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return false
	}
	return s.Validate(doc) == nil
}

func TestExamplesParseAndMatchSchema(t *testing.T) {
	schema := compileSchema(t)
	files, err := filepath.Glob("testdata/*.json")
	if err != nil || len(files) != 4 {
		t.Fatalf("want the 4 documented examples, got %v %v", files, err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			raw, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := envelope.Parse(raw, envelope.DefaultMaxBytes)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if ev.Type+".json" != "chapar."+filepath.Base(f) {
				t.Errorf("type %s from %s", ev.Type, f)
			}
			if !schemaAccepts(t, schema, raw) {
				t.Error("schema rejects a documented example")
			}
		})
	}
}

func mustRead(t *testing.T, name string) map[string]any {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestParseRejects(t *testing.T) {
	schema := compileSchema(t)
	track := func(edit func(m map[string]any)) []byte {
		m := mustRead(t, "track.json")
		edit(m)
		b, _ := json.Marshal(m)
		return b
	}
	data := func(m map[string]any) map[string]any { return m["data"].(map[string]any) }
	tests := []struct {
		name   string
		raw    []byte
		max    int
		fields []string // every field the error must name
	}{
		{"not JSON", []byte("order_paid user=42"), 0, []string{""}},
		{"JSON but not an object", []byte(`["a"]`), 0, []string{""}},
		{"missing required attributes", []byte(`{"data":{}}`), 0, []string{"specversion", "id", "source", "type"}},
		{"wrong specversion", track(func(m map[string]any) { m["specversion"] = "0.3" }), 0, []string{"specversion"}},
		{"unknown type", track(func(m map[string]any) { m["type"] = "chapar.click" }), 0, []string{"type"}},
		{"id is a number", track(func(m map[string]any) { m["id"] = 42 }), 0, []string{"id"}},
		{"time not RFC 3339", track(func(m map[string]any) { m["time"] = "yesterday" }), 0, []string{"time"}},
		{"name is a number", track(func(m map[string]any) { data(m)["name"] = 7 }), 0, []string{"data.name"}},
		{"missing name", track(func(m map[string]any) { delete(data(m), "name") }), 0, []string{"data.name"}},
		{"nested property", track(func(m map[string]any) { data(m)["properties"].(map[string]any)["cart"] = map[string]any{"a": 1} }), 0, []string{"data.properties.cart"}},
		{"no identity", track(func(m map[string]any) { data(m)["user"] = map[string]any{"ip": "1.2.3.4"} }), 0, []string{"data.user"}},
		{"unknown data field", track(func(m map[string]any) { data(m)["nmae"] = "x" }), 0, []string{"data"}},
		{"missing data", track(func(m map[string]any) { delete(m, "data") }), 0, []string{"data"}},
		{"oversized", track(func(m map[string]any) { data(m)["properties"].(map[string]any)["blob"] = strings.Repeat("x", 2048) }), 1024, []string{""}},
		{"purchase without currency", func() []byte {
			m := mustRead(t, "purchase.json")
			delete(data(m), "currency")
			data(m)["revenue"] = -5
			b, _ := json.Marshal(m)
			return b
		}(), 0, []string{"data.currency", "data.revenue"}},
		{"notify bad target", func() []byte {
			m := mustRead(t, "notify.json")
			data(m)["target"] = map[string]any{"type": "CHAT"}
			b, _ := json.Marshal(m)
			return b
		}(), 0, []string{"data.target.type", "data.target.id"}},
		{"identify bad gender and channel", func() []byte {
			m := mustRead(t, "identify.json")
			tr := data(m)["traits"].(map[string]any)
			tr["gender"] = "M"
			tr["channels"] = []string{"Fax"}
			b, _ := json.Marshal(m)
			return b
		}(), 0, []string{"data.traits.gender", "data.traits.channels[0]"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := envelope.Parse(tt.raw, tt.max)
			var verr *envelope.ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("want a *ValidationError, got %v", err)
			}
			got := map[string]bool{}
			for _, v := range verr.Violations {
				got[v.Field] = true
				if v.Problem == "" {
					t.Errorf("violation of %q has no problem text", v.Field)
				}
			}
			for _, f := range tt.fields {
				if !got[f] {
					t.Errorf("error does not name %q: %v", f, err)
				}
			}
			if tt.max == 0 && schemaAccepts(t, schema, tt.raw) {
				t.Errorf("schema accepts what Parse rejects: %v", err)
			}
		})
	}
}

type headers map[string]string

func (h headers) Get(k string) string { return h[k] }

func TestParseMessageBinaryMode(t *testing.T) {
	h := headers{
		"ce-specversion":  "1.0",
		"ce-id":           "bin-1",
		"ce-source":       "go-test",
		"ce-type":         "chapar.track",
		"ce-time":         "2026-11-23T10:00:00Z",
		"ce-destinations": "chabok, metrix",
		"Content-Type":    "application/json",
	}
	ev, err := envelope.ParseMessage(h, []byte(`{"name":"signup","user":{"id":"u1"}}`), envelope.DefaultMaxBytes)
	if err != nil {
		t.Fatal(err)
	}
	if ev.ID != "bin-1" || ev.Track == nil || ev.Track.Name != "signup" || ev.Time == nil {
		t.Fatalf("decoded %+v", ev)
	}
	if got := ev.DestinationList(); len(got) != 2 || got[0] != "chabok" || got[1] != "metrix" {
		t.Errorf("destinations %v", got)
	}
	delete(h, "ce-id")
	if _, err := envelope.ParseMessage(h, []byte(`{"name":"signup","user":{"id":"u1"}}`), 0); err == nil || !strings.Contains(err.Error(), "id is required") {
		t.Errorf("binary mode without ce-id: %v", err)
	}
}

func TestNewBuildsValidEnvelopes(t *testing.T) {
	env, err := envelope.New(envelope.TypePurchase, "shop", envelope.Purchase{
		Track:    envelope.Track{Name: "purchase", User: envelope.User{ID: "u1"}},
		Revenue:  "1000",
		Currency: "IRR",
	}, envelope.WithSubject("u1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(env.ID) != 36 || env.ID[14] != '7' {
		t.Errorf("id %q is not a UUIDv7", env.ID)
	}
	raw, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ev, err := envelope.Parse(raw, 0)
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	if ev.Purchase.Revenue != "1000" || ev.Subject != "u1" {
		t.Errorf("round trip lost data: %+v", ev.Purchase)
	}
	if _, err := envelope.New(envelope.TypeTrack, "shop", envelope.Track{}); err == nil {
		t.Error("New accepted a track without a name or user")
	}
}

// FuzzParse checks that Parse never panics, that it accepts only valid JSON,
// and that whatever it accepts is valid again after a round trip. CI runs
// the seed corpus only; run the fuzzer with
// go test -run '^$' -fuzz FuzzParse -fuzztime 60s ./pkg/envelope/
func FuzzParse(f *testing.F) {
	for _, name := range []string{"track.json", "purchase.json", "identify.json", "notify.json"} {
		raw, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(raw)
	}
	for _, seed := range []string{
		`{"specversion":"1.0","id":"e\ud800","source":"s","type":"chapar.notify","data":{"message":"m","target":{"type":"USER","id":"u"}}}`,
		`{"specversion":"1.0","id":"e","source":"s\u0000","type":"chapar.notify","traceparent":"00-a-b-01","data":{"message":"m","target":{"type":"USER","id":"u"}}}`,
		"{\"specversion\":\"1.0\",\"id\":\"e\xff\",\"source\":\"s\",\"type\":\"chapar.track\",\"data\":{\"name\":\"n\xff\",\"user\":{\"id\":\"u\"}}}",
		`{"specversion":"1.0","id":"e","source":"s","type":"chapar.track","destinations":"a, b,,c","x1":true,"x2":-7,"data":{"name":"n","properties":{"k":["a",1,true]},"user":{"id":"u"}}}`,
		`{"id":"a","id":"b"}`, `[]`, `{"data":{"a":[[[[]]]]}}`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		ev, err := envelope.Parse(raw, envelope.DefaultMaxBytes)
		if (ev == nil) == (err == nil) {
			t.Fatalf("Parse must return exactly one of event and error: %v %v", ev, err)
		}
		if err != nil {
			var verr *envelope.ValidationError
			if !errors.As(err, &verr) {
				t.Fatalf("not a *ValidationError: %v", err)
			}
			if !utf8.ValidString(verr.ID) || len(verr.ID) > envelope.MaxIDBytes {
				t.Fatalf("error id %q", verr.ID)
			}
			return
		}
		if !json.Valid(raw) {
			t.Fatalf("accepted invalid JSON %q", raw)
		}
		for _, s := range []string{ev.ID, ev.Source, ev.Type, ev.Subject, ev.DataSchema, ev.Destinations, ev.Name()} {
			if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
				t.Fatalf("accepted %q", s)
			}
		}
		if _, err := ev.Decode(); err != nil {
			t.Fatalf("accepted event does not re-validate: %v", err)
		}
		b, err := ev.Marshal()
		if err != nil {
			t.Fatalf("accepted event does not marshal: %v", err)
		}
		again, err := envelope.Parse(b, 0)
		if err != nil {
			t.Fatalf("accepted event does not re-parse: %v\n%s", err, b)
		}
		if again.ID != ev.ID || again.Type != ev.Type || len(again.Extensions) != len(ev.Extensions) {
			t.Fatalf("round trip changed the event: %+v -> %+v", ev.Envelope, again.Envelope)
		}
	})
}

func BenchmarkParseTrack(b *testing.B) {
	raw, err := os.ReadFile("testdata/track.json")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := envelope.Parse(raw, envelope.DefaultMaxBytes); err != nil {
			b.Fatal(err)
		}
	}
}

func mustReadRaw(t *testing.T, name string) []byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func BenchmarkParseMessage(b *testing.B) {
	raw, err := os.ReadFile("testdata/track.json")
	if err != nil {
		b.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		b.Fatal(err)
	}
	data := []byte(m["data"])
	binary := nats.Header{}
	for _, k := range []string{"specversion", "id", "source", "type", "time", "subject"} {
		var s string
		if err := json.Unmarshal(m[k], &s); err != nil {
			b.Fatal(err)
		}
		binary.Set("ce-"+k, s)
	}
	binary.Set("ce-traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	binary.Set("Content-Type", envelope.ContentTypeJSON)
	structured := nats.Header{"Content-Type": {envelope.ContentTypeCloudEvents}}
	for _, bm := range []struct {
		name string
		h    nats.Header
		body []byte
	}{
		{"structured", structured, raw},
		{"binary", binary, data},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.SetBytes(int64(len(bm.body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := envelope.ParseMessage(bm.h, bm.body, envelope.DefaultMaxBytes); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
