package filter

import (
	"encoding/json"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

func event(typ, source, data string) *envelope.Event {
	at := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	ev := &envelope.Event{Envelope: envelope.Envelope{SpecVersion: "1.0", ID: "e1", Source: source, Type: typ,
		Subject: "u1", Time: &at, Extensions: map[string]string{"tenant": "acme"}}}
	if data != "" {
		ev.Data = json.RawMessage(data)
	}
	if typ == envelope.TypeTrack {
		ev.Track = &envelope.Track{Name: "order_paid"}
	}
	return ev
}

func TestMatch(t *testing.T) {
	const order = `{"name":"order_paid","properties":{"amount":2500000,"id":9007199254740993,"ratio":0.5,"tags":["vip"]},"user":{"id":"u1","country":"IR"}}`
	tests := []struct {
		name   string
		expr   string
		source string
		data   string
		want   bool
		err    string // a substring of the runtime error; "" for none
	}{
		{"number at least", `data.properties.amount >= 1000000`, "shop/web", order, true, ""},
		{"number below", `data.properties.amount >= 3000000`, "shop/web", order, false, ""},
		{"string equal", `data.user.country == "IR"`, "shop/web", order, true, ""},
		{"string differs", `data.user.country == "DE"`, "shop/web", order, false, ""},
		{"source prefix", `source startsWith "shop/"`, "shop/web", order, true, ""},
		{"source prefix differs", `source startsWith "shop/"`, "blog/web", order, false, ""},
		{"integer beyond 2^53 kept exact", `data.properties.id == 9007199254740993`, "s", order, true, ""},
		{"integer beyond 2^53 not rounded", `data.properties.id == 9007199254740992`, "s", order, false, ""},
		{"float", `data.properties.ratio < 1`, "s", order, true, ""},
		{"in a list", `"vip" in data.properties.tags`, "s", order, true, ""},
		{"attributes", `type == "chapar.track" && name == "order_paid" && subject == "u1" && id == "e1"`, "s", order, true, ""},
		{"extension", `extensions.tenant == "acme"`, "s", order, true, ""},
		{"time", `time > date("2026-01-01T00:00:00Z")`, "s", order, true, ""},
		{"absent field compared for equality", `data.user.city == "Tehran"`, "s", order, false, ""},
		{"absent field made safe", `(data.shipping?.country ?? "IR") == "IR"`, "s", order, true, ""},
		{"absent object read through", `data.shipping.country == "IR"`, "s", order, false, "cannot fetch country"},
		{"absent field ordered", `data.properties.weight > 1`, "s", order, false, "invalid operation"},
		{"wrong type", `data.user.country > 1`, "s", order, false, "invalid operation"},
		{"no data", `data.user.country == "IR"`, "s", "", false, "cannot fetch user"},
		{"data not JSON", `data.user.country == "IR"`, "s", `{"user":`, false, "data is not JSON"},
		{"data not JSON, filter does not read it", `source == "s"`, "s", `{"user":`, true, ""},
		{"absent field read as is", `data.flag`, "s", order, false, ""},
		{"memory bounded", `len(1..100000000) > 1`, "s", order, false, "memory budget exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Compile(tt.expr)
			if err != nil {
				t.Fatal(err)
			}
			got, err := f.Match(NewInput(event(envelope.TypeTrack, tt.source, tt.data)))
			if got != tt.want {
				t.Errorf("Match = %v, want %v (err %v)", got, tt.want, err)
			}
			switch {
			case tt.err == "" && err != nil:
				t.Errorf("error %v, want none", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Errorf("error %v, want one saying %q", err, tt.err)
			case err != nil && strings.Contains(err.Error(), "\n"):
				t.Errorf("error %q spans lines; it is logged on one", err)
			}
		})
	}
}

func TestCompileErrors(t *testing.T) {
	tests := []struct {
		expr string
		want string // the error, as config check shows it
	}{
		{`type == `, "unexpected token EOF (at column 8)"},
		{`data.user.country = "IR"`, `unexpected token Operator("="), use == to compare (at column 19)`},
		{`dat.x == 1`, "unknown name dat (at column 1)"},
		{`type == 1`, "invalid operation: == (mismatched types string and int) (at column 6)"},
		{`source + "x"`, "expected bool, but got string"},
		{`now() > time`, "unknown name now"},
		{"type == \"a\" &&\n  nme == \"b\"", "unknown name nme (line 2, column 3)"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			_, err := Compile(tt.expr)
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("Compile = %v, want a *CompileError", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want %q", err, tt.want)
			}
		})
	}
}

func TestUsesData(t *testing.T) {
	for expr, want := range map[string]bool{
		`source startsWith "shop/"`:     false,
		`data.x == 1`:                   true,
		`type == "t" || data?.y == nil`: true,
		`extensions.tenant == "data"`:   false,
	} {
		f, err := Compile(expr)
		if err != nil {
			t.Fatal(err)
		}
		if f.UsesData() != want {
			t.Errorf("%s: UsesData = %v, want %v", expr, f.UsesData(), want)
		}
	}
}

// A filter that does not read data must not decode it: the cost of a
// source prefix is the cost of the comparison.
func TestDataDecodedOnlyWhenRead(t *testing.T) {
	src, _ := Compile(`source == "s"`)
	in := NewInput(event("com.shop.order", "s", `{"a":1}`))
	if ok, err := src.Match(in); !ok || err != nil {
		t.Fatalf("Match = %v, %v", ok, err)
	}
	if in.decoded {
		t.Fatal("data decoded for a filter that does not read it")
	}
	dat, _ := Compile(`data.a == 1`)
	if ok, err := dat.Match(in); !ok || err != nil {
		t.Fatalf("Match = %v, %v", ok, err)
	}
	if !in.decoded {
		t.Fatal("data not decoded for a filter that reads it")
	}
}

// Names is what config check offers for a misspelt name: every name of
// Env, and only those.
func TestNamesAreEnv(t *testing.T) {
	var tags []string
	typ := reflect.TypeFor[Env]()
	for i := range typ.NumField() {
		tags = append(tags, typ.Field(i).Tag.Get("expr"))
	}
	if got := Names(); !slices.Equal(got, tags) {
		t.Errorf("Names = %v, Env's names are %v", got, tags)
	}
}
