package envelope_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

// customEnvelope is a structured envelope of a producer's own type.
func customEnvelope(t *testing.T, eventType string, data any) []byte {
	t.Helper()
	m := map[string]any{"specversion": "1.0", "id": "c-1", "source": "shop-api", "type": eventType}
	if data != nil {
		m["data"] = data
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Any CloudEvents type is accepted, with any JSON data (or none), and the
// data is kept as the producer wrote it.
func TestParseAcceptsCustomTypes(t *testing.T) {
	schema := compileSchema(t)
	tests := []struct {
		name, eventType string
		raw             []byte
		wantData        string
	}{
		{"reverse-DNS type, object data", "com.shop.order.shipped", nil, `{"order":{"id":"A-1001","items":[1,2.50,{"sku":"x"}]},"carrier":null}`},
		{"one token", "OrderShipped", nil, `{"n":1}`},
		{"punctuation", "io.github/pull_request:opened-v1~x", nil, `[1,"two",true]`},
		{"string data", "com.shop.ping", nil, `"hello"`},
		{"no data", "com.shop.heartbeat", nil, ``},
		{"number data keeps its text", "com.shop.total", nil, `12345678901234567890.000001`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := []byte(`{"specversion":"1.0","id":"c-1","source":"shop-api","type":"` + tt.eventType + `"`)
			if tt.wantData != "" {
				raw = append(raw, `,"data":`+tt.wantData...)
			}
			raw = append(raw, '}')
			ev, err := envelope.Parse(raw, envelope.DefaultMaxBytes)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if ev.Type != tt.eventType || string(ev.Data) != tt.wantData {
				t.Errorf("type %q data %s; want %q %s", ev.Type, ev.Data, tt.eventType, tt.wantData)
			}
			if ev.Track != nil || ev.Purchase != nil || ev.Identify != nil || ev.Notify != nil || ev.Name() != "" {
				t.Errorf("a custom type decoded as a Chapar one: %+v", ev)
			}
			if envelope.IsChaparType(ev.Type) {
				t.Errorf("IsChaparType(%q)", ev.Type)
			}
			if !schemaAccepts(t, schema, raw) {
				t.Error("schema refuses what Parse accepts")
			}
			// Binary mode: the body is the data.
			h := nats.Header{}
			h.Set("ce-specversion", "1.0")
			h.Set("ce-id", "c-1")
			h.Set("ce-source", "shop-api")
			h.Set("ce-type", tt.eventType)
			h.Set("Content-Type", envelope.ContentTypeJSON)
			bin, err := envelope.ParseMessage(h, []byte(tt.wantData), envelope.DefaultMaxBytes)
			if err != nil {
				t.Fatalf("ParseMessage (binary): %v", err)
			}
			if string(bin.Data) != tt.wantData {
				t.Errorf("binary data %s", bin.Data)
			}
		})
	}
	// A Go producer builds one with New.
	env, err := envelope.New("com.shop.order.shipped", "shop-api", map[string]any{"order": "A-1001"})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	raw, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := envelope.Parse(raw, 0); err != nil || string(ev.Data) != `{"order":"A-1001"}` {
		t.Fatalf("round trip: %v %s", err, raw)
	}
}

// A type that is empty, that cannot be a NATS subject's tokens, that is
// too long, or that uses Chapar's reserved chapar. prefix is refused; so is
// custom data that is not JSON or carries text Chapar refuses everywhere.
func TestParseRefusesMalformedTypes(t *testing.T) {
	for _, tt := range []struct {
		name, eventType string
		schemaBlind     bool
	}{
		{"empty", "", false},
		{"space", "com.shop order", false},
		{"only a space", " ", false},
		{"tab", "com.shop\torder", false},
		{"empty token", "com..shop", false},
		{"leading dot", ".com.shop", false},
		{"trailing dot", "com.shop.", false},
		{"wildcard *", "com.shop.*", false},
		{"wildcard >", "com.shop.>", false},
		{"non-ASCII", "com.shop.سفارش", false},
		{"NUL", "com.shop\x00", false},
		{"over 1 KiB", "com." + strings.Repeat("t", 1021), false},
		{"reserved chapar. prefix", "chapar.click", false},
		{"reserved, a typo of a Chapar type", "chapar.trak", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			raw := customEnvelope(t, tt.eventType, map[string]any{"a": 1})
			assertRejected(t, raw, []string{"type"}, tt.schemaBlind)
		})
	}
	t.Run("binary data not JSON", func(t *testing.T) {
		h := nats.Header{}
		h.Set("ce-specversion", "1.0")
		h.Set("ce-id", "c-1")
		h.Set("ce-source", "shop-api")
		h.Set("ce-type", "com.shop.order.shipped")
		h.Set("Content-Type", envelope.ContentTypeJSON)
		if _, err := envelope.ParseMessage(h, []byte(`order=A-1001`), 0); err == nil || !strings.Contains(err.Error(), "data") {
			t.Errorf("binary body that is not JSON: %v", err)
		}
	})
	t.Run("data invalid UTF-8", func(t *testing.T) {
		raw := []byte("{\"specversion\":\"1.0\",\"id\":\"c\",\"source\":\"s\",\"type\":\"com.shop.x\",\"data\":{\"a\":\"\xff\"}}")
		assertRejected(t, raw, []string{"data.a"}, true)
	})
	t.Run("New with data that is not JSON", func(t *testing.T) {
		if _, err := envelope.New("com.shop.x", "s", func() {}); err == nil {
			t.Error("New accepted a func as data")
		}
	})
}
