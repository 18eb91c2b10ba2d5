package envelope

import (
	"bytes"
	"encoding/json"
	"os"
	"reflect"
	"testing"
)

// stdDecode is decodeData's encoding/json path, alone.
func stdDecode(raw []byte, into any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	return dec.Decode(into)
}

func newData(kind int) any {
	switch kind % 3 {
	case 0:
		return &Track{}
	case 1:
		return &Purchase{}
	}
	return &Identify{}
}

// checkFastData holds the fast path to its promise: it decodes exactly
// what encoding/json decodes, or declines leaving its target untouched.
func checkFastData(t *testing.T, raw []byte, kind int) (accepted bool) {
	t.Helper()
	fast, std := newData(kind), newData(kind)
	ok := decodeDataFast(raw, fast)
	if !ok {
		if !reflect.DeepEqual(fast, newData(kind)) {
			t.Fatalf("declined %q but left %#v", raw, fast)
		}
		return false
	}
	if err := stdDecode(raw, std); err != nil {
		t.Fatalf("fast path took %q (%T), encoding/json refuses it: %v", raw, fast, err)
	}
	if !reflect.DeepEqual(fast, std) {
		t.Fatalf("%q (%T):\nfast %#v\nstd  %#v", raw, fast, fast, std)
	}
	return true
}

// plainData are data the fast path must take (the common case it exists
// for), each of kind 0 track, 1 purchase, 2 identify.
var plainData = []struct {
	kind int
	raw  string
}{
	{0, `{"name":"order_paid","properties":{"orderId":"A-1001","items":3,"firstOrder":true,"paidAt":"2026-11-23T10:14:58Z","categories":["books","games"]},"user":{"id":"user-42","chabokInstallationId":"inst-9f2c","metrixUserId":"1415211453000-6513894","metrixSessionId":"sess-77","advertisingId":"38400000-8cf0-11bd-b23e-10b96e40000d","ip":"203.0.113.7"}}`},
	{0, " { \"name\" : \"a\\u00e9\\n\\ud83d\\ude00\" , \"user\" : { \"idfa\" : \"x\" } , \"properties\" : { } } \n"},
	{0, `{"name":"n","properties":{"a":[],"b":-0.5e-3,"c":false,"d":"کاربر","e":[1,"x",true]},"user":{}}`},
	{0, `{}`},
	{1, `{"name":"purchase","revenue":250000,"currency":"IRR","properties":{"orderId":"A-1001","coupon":"NOWRUZ"},"user":{"id":"user-42","metrixUserId":"1415211453000-6513894"}}`},
	{1, `{"revenue":-1.25E+2,"name":"p","currency":"usd","user":{"id":"\u0000"}}`},
	{2, `{"user":{"id":"user-42","metrixUserId":"1415211453000-6513894"},"traits":{"firstName":"Reza","lastName":"Akbari","email":"reza@example.com","phoneNumber":"09121122333","city":"Tehran","gender":"Male","birthday":"1990-04-03","channels":["SMS","Push"],"customAttributes":{"loyalty_level":"vip","orders":12}}}`},
	{2, `{"user":{"id":"u"},"traits":{"channels":[],"hashedEmail":"h","hashedPhoneNumber":"p","country":"IR","region":"r","locality":"l","gender":"Robot"}}`},
}

// declinedData are data the fast path must leave to encoding/json: each
// is a case where encoding/json decodes differently from a plain reading,
// or fails with a message of its own.
var declinedData = []struct {
	kind int
	raw  string
}{
	{0, `{"Name":"x"}`},                                // case-insensitive match
	{0, `{"name":"x","name":"y"}`},                     // duplicate: last wins
	{0, `{"properties":{"a":1},"properties":{"b":2}}`}, // duplicate map: merged
	{0, `{"name":null}`},                               // null leaves the field
	{0, `{"name":1}`},                                  // type error
	{0, `{"nmae":"x"}`},                                // unknown field
	{0, `{"properties":{"a":{"b":1}}}`},                // nested object
	{0, `{"properties":{"a":null}}`},                   // null property
	{0, `{"properties":{"a":[[1]]}}`},                  // nested array
	{0, `{"properties":{"a":[{}]}}`},                   // object in an array
	{0, `{"name":"\ud800"}`},                           // lone surrogate: U+FFFD
	{0, "{\"name\":\"\xff\"}"},                         // invalid UTF-8: U+FFFD
	{0, `{"na\u006de":"x"}`},                           // escaped key
	{0, `{"name":"x"} {}`},                             // data after the value
	{0, `{"name":"x",}`},                               // syntax
	{0, `{"properties":{"a":01}}`},                     // syntax
	{0, `{"properties":{"a":tru}}`},                    // syntax
	{0, `[]`},                                          // not an object
	{0, `{"revenue":1}`},                               // a purchase's field on a track
	{1, `{"revenue":"12"}`},                            // a string into json.Number
	{1, `{"revenue":1,"revenue":2}`},                   // duplicate
	{1, `{"user":{"id":"a","ID":"b"}}`},                // case-insensitive, in the user
	{2, `{"traits":{"channels":null}}`},                // null slice
	{2, `{"traits":{"channels":["SMS",1]}}`},           // type error in a slice
	{2, `{"traits":{"customAttributes":[]}}`},          // type error
	{2, `{"name":"x"}`},                                // a track's field on identify
}

func TestFastDataAgreesWithEncodingJSON(t *testing.T) {
	for _, c := range plainData {
		if !checkFastData(t, []byte(c.raw), c.kind) {
			t.Errorf("fast path declined plain data %s", c.raw)
		}
	}
	for _, c := range declinedData {
		if checkFastData(t, []byte(c.raw), c.kind) {
			t.Errorf("fast path took %s, which is encoding/json's to decide", c.raw)
		}
	}
}

// TestParseTakesTheFastPath checks the examples in testdata decode on the
// fast path, which the benchmarks' figures assume.
func TestParseTakesTheFastPath(t *testing.T) {
	for _, name := range []string{"track.json", "purchase.json", "identify.json"} {
		raw, err := os.ReadFile("testdata/" + name)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		kind := map[string]int{"track.json": 0, "purchase.json": 1, "identify.json": 2}[name]
		if !checkFastData(t, m["data"], kind) {
			t.Errorf("%s: its data is not decoded on the fast path", name)
		}
	}
}

func FuzzFastData(f *testing.F) {
	for _, c := range plainData {
		f.Add([]byte(c.raw), uint8(c.kind))
	}
	for _, c := range declinedData {
		f.Add([]byte(c.raw), uint8(c.kind))
	}
	f.Fuzz(func(t *testing.T, raw []byte, kind uint8) {
		checkFastData(t, raw, int(kind))
	})
}

// BenchmarkDecodeData compares, on the same data in the same run, the
// fast path with the encoding/json Decoder it stands in front of.
//
//	go test -run '^$' -bench DecodeData -benchmem -count 6 ./pkg/envelope/
func BenchmarkDecodeData(b *testing.B) {
	for _, name := range []string{"track", "purchase", "identify"} {
		raw, err := os.ReadFile("testdata/" + name + ".json")
		if err != nil {
			b.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			b.Fatal(err)
		}
		data := []byte(m["data"])
		kind := map[string]int{"track": 0, "purchase": 1, "identify": 2}[name]
		b.Run(name+"/encoding-json", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := stdDecode(data, newData(kind)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/fast", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !decodeDataFast(data, newData(kind)) {
					b.Fatal("declined")
				}
			}
		})
	}
}
