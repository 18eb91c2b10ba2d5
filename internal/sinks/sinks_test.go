package sinks

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

var (
	occurred   = time.Date(2026, 11, 23, 10, 15, 0, 0, time.UTC)
	receivedAt = time.Date(2026, 11, 23, 10, 15, 3, 0, time.UTC)
)

func newSink(t testing.TB, vendor, baseURL string, events map[string]string, settings map[string]any) Sink {
	t.Helper()
	var node yaml.Node
	if err := node.Encode(settings); err != nil {
		t.Fatal(err)
	}
	v, ok := Lookup(vendor)
	if !ok {
		t.Fatalf("vendor %s is not registered", vendor)
	}
	s, err := v.New(config.Sink{
		Name: vendor, Vendor: vendor, BaseURL: baseURL, Concurrency: 2, Timeout: 2 * time.Second,
		Events: events, Settings: node,
	}, "settings")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func event(t testing.TB, typ string, data any, opts ...envelope.Option) *Delivery {
	t.Helper()
	env, err := envelope.New(typ, "test", data, append([]envelope.Option{envelope.WithID("evt-1"), envelope.WithTime(occurred)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := env.Decode()
	if err != nil {
		t.Fatal(err)
	}
	return &Delivery{Event: ev, ReceivedAt: receivedAt}
}

var user = envelope.User{
	ID: "user-42", ChabokInstallationID: "inst-9", MetrixUserID: "mx-1", MetrixSessionID: "sess-1",
	AdvertisingID: "ad-1", IP: "203.0.113.7",
}

func props() map[string]any {
	return map[string]any{"orderId": "A-1", "items": json.Number("3"), "first": true, "tags": []any{"a", "b"}}
}

// want is what a delivery should end in: nil error, or these fields of *Error.
type want struct {
	reason    outcome.Reason
	transient bool
	status    int
	code      string
}

func checkOutcome(t *testing.T, err error, w *want) {
	t.Helper()
	if w == nil {
		if err != nil {
			t.Fatalf("want delivered, got %v", err)
		}
		return
	}
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("want *Error %+v, got %v", *w, err)
	}
	got := want{e.Reason, e.Transient, e.Status, e.Code}
	if got != *w {
		t.Fatalf("outcome %+v, want %+v (%v)", got, *w, err)
	}
}

// vendorCase is one row of a vendor's table: an event, an optional fault,
// the outcome, and what the vendor must have received.
type vendorCase struct {
	name     string
	settings map[string]any
	events   map[string]string
	delivery *Delivery
	fault    *emulator.Fault
	want     *want
	// check inspects the one request the vendor received; nil with
	// noRequest means none may be sent.
	check     func(t *testing.T, r emulator.Request, body map[string]any)
	noRequest bool
}

func runVendorCases(t *testing.T, vendor string, base map[string]any, cases []vendorCase) {
	emu := emulator.New(emulator.DemoConfig())
	v := emu.Vendor(vendor)
	srv := httptest.NewServer(v)
	defer srv.Close()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v.Reset()
			if tc.fault != nil {
				v.SetFault(*tc.fault)
			}
			settings := map[string]any{}
			for k, val := range base {
				settings[k] = val
			}
			for k, val := range tc.settings {
				settings[k] = val
			}
			s := newSink(t, vendor, emulator.BaseURL(vendor, srv.Listener.Addr().String()), tc.events, settings)
			err := s.Deliver(context.Background(), tc.delivery)
			checkOutcome(t, err, tc.want)
			reqs := v.Requests()
			if tc.noRequest {
				if len(reqs) != 0 {
					t.Fatalf("%d requests sent for an event that must be rejected first", len(reqs))
				}
				return
			}
			if len(reqs) != 1 {
				t.Fatalf("vendor received %d requests, want 1", len(reqs))
			}
			if ua := reqs[0].Header.Get("User-Agent"); ua != UserAgent {
				t.Errorf("User-Agent %q", ua)
			}
			if tc.check != nil {
				var body map[string]any
				if len(reqs[0].Body) > 0 {
					dec := json.NewDecoder(strings.NewReader(string(reqs[0].Body)))
					dec.UseNumber()
					if err := dec.Decode(&body); err != nil {
						t.Fatal(err)
					}
				}
				tc.check(t, reqs[0], body)
			}
		})
	}
}

func equal(t *testing.T, what string, got, want any) {
	t.Helper()
	if !reflect.DeepEqual(got, want) {
		t.Errorf("%s = %#v, want %#v", what, got, want)
	}
}

func TestChabok(t *testing.T) {
	creds := map[string]any{"app_id": "demoapp", "access_token": "demo-chabok-token"}
	byDevice := event(t, envelope.TypeTrack, envelope.Track{Name: "order_paid", Properties: props(), User: user})
	byUser := event(t, envelope.TypeTrack, envelope.Track{Name: "order_paid", User: envelope.User{ID: "user-42"}})
	purchase := event(t, envelope.TypePurchase, envelope.Purchase{Track: envelope.Track{Name: "purchase", User: user}, Revenue: "250000", Currency: "IRR"})
	runVendorCases(t, emulator.Chabok, creds, []vendorCase{
		{name: "track by installation", delivery: byDevice, events: map[string]string{"order_paid": "OrderPaid"},
			check: func(t *testing.T, r emulator.Request, b map[string]any) {
				equal(t, "path", r.Path, "/api/installations/track")
				equal(t, "token", r.Header.Get("X-Access-Token"), "demo-chabok-token")
				equal(t, "body", b, map[string]any{
					"installationId": "inst-9", "eventName": "OrderPaid", "eventTime": json.Number("1795428900000"),
					"eventData": map[string]any{"orderId": "A-1", "items": json.Number("3"), "first": true, "tags": []any{"a", "b"}},
				})
			}},
		{name: "track by user id, time defaults to receipt", delivery: func() *Delivery {
			d := *byUser
			ev := *d.Event
			ev.Time = nil
			d.Event = &ev
			return &d
		}(), check: func(t *testing.T, r emulator.Request, b map[string]any) {
			equal(t, "userId", b["userId"], "user-42")
			equal(t, "installationId", b["installationId"], nil)
			equal(t, "eventTime", b["eventTime"], json.Number("1795428903000"))
		}},
		{name: "purchase renames the currency", delivery: purchase, check: func(t *testing.T, r emulator.Request, b map[string]any) {
			equal(t, "path", r.Path, "/api/installations/trackPurchase")
			equal(t, "revenue", b["revenue"], json.Number("250000"))
			equal(t, "currency", b["currency"], "RIAL")
		}},
		{name: "identify is not a Chabok call", delivery: event(t, envelope.TypeIdentify, envelope.Identify{User: user}),
			want: &want{reason: ReasonUnsupportedEvent}, noRequest: true},
		{name: "unmapped with require_mapping", delivery: byDevice, settings: map[string]any{"require_mapping": true},
			want: &want{reason: ReasonUnmappedEvent}, noRequest: true},
		{name: "401 wrong token", delivery: byDevice, settings: map[string]any{"access_token": "wrong"},
			want: &want{reason: ReasonVendorRejected, status: 401, code: "AUTHORIZATION_REQUIRED"}},
		{name: "400", delivery: byDevice, fault: &emulator.Fault{Status: 400, Code: "INVALID_EVENT"},
			want: &want{reason: ReasonVendorRejected, status: 400, code: "INVALID_EVENT"}},
		{name: "404", delivery: byDevice, fault: &emulator.Fault{Status: 404, Code: "MODEL_NOT_FOUND"},
			want: &want{reason: ReasonVendorRejected, status: 404, code: "MODEL_NOT_FOUND"}},
		{name: "408 retries", delivery: byDevice, fault: &emulator.Fault{Status: 408},
			want: &want{reason: ReasonRetriesExhausted, transient: true, status: 408}},
		{name: "503 retries", delivery: byDevice, fault: &emulator.Fault{Status: 503},
			want: &want{reason: ReasonRetriesExhausted, transient: true, status: 503}},
	})
}

func TestMetrixS2S(t *testing.T) {
	creds := map[string]any{"app_id": "demoapp", "dev_key": "demo-dev-key"}
	slugs := map[string]string{"order_paid": "aewqd", "purchase": "rvnue", "level_up": "zzzzz"}
	track := event(t, envelope.TypeTrack, envelope.Track{Name: "order_paid", Properties: props(), User: user})
	both := user
	both.IDFA = "idfa-1"
	neither := user
	neither.AdvertisingID = ""
	noSession := user
	noSession.MetrixSessionID = ""
	runVendorCases(t, emulator.MetrixS2S, creds, []vendorCase{
		{name: "track splits properties by type", delivery: track, events: slugs,
			check: func(t *testing.T, r emulator.Request, b map[string]any) {
				equal(t, "path", r.Path, "/inappevent/demoapp")
				equal(t, "auth", r.Header.Get("Authorization"), "demo-dev-key")
				equal(t, "body", b, map[string]any{
					"metrixUserId": "mx-1", "metrixSessionId": "sess-1", "advertisingId": "ad-1", "deviceIp": "203.0.113.7",
					"eventSlug": "aewqd", "eventTime": json.Number("1795428900000"),
					"customAttributes": map[string]any{"orderId": "A-1", "first": "true", "tags": `["a","b"]`},
					"customMetrics":    map[string]any{"items": json.Number("3")},
				})
			}},
		{name: "purchase revenue is a metric", events: slugs,
			delivery: event(t, envelope.TypePurchase, envelope.Purchase{Track: envelope.Track{Name: "purchase", User: user}, Revenue: "130.5", Currency: "USD"}),
			check: func(t *testing.T, r emulator.Request, b map[string]any) {
				equal(t, "metrics", b["customMetrics"], map[string]any{"revenue": json.Number("130.5")})
				equal(t, "attributes", b["customAttributes"], map[string]any{"currency": "USD"})
			}},
		{name: "event time in seconds when configured", delivery: track, events: slugs, settings: map[string]any{"event_time_unit": "s"},
			check: func(t *testing.T, r emulator.Request, b map[string]any) {
				equal(t, "eventTime", b["eventTime"], json.Number("1795428900"))
			}},
		{name: "both device ids", events: slugs, delivery: event(t, envelope.TypeTrack, envelope.Track{Name: "order_paid", User: both}),
			want: &want{reason: ReasonInvalidForVendor}, noRequest: true},
		{name: "neither device id", events: slugs, delivery: event(t, envelope.TypeTrack, envelope.Track{Name: "order_paid", User: neither}),
			want: &want{reason: ReasonInvalidForVendor}, noRequest: true},
		{name: "no session", events: slugs, delivery: event(t, envelope.TypeTrack, envelope.Track{Name: "order_paid", User: noSession}),
			want: &want{reason: ReasonInvalidForVendor}, noRequest: true},
		{name: "unmapped name", delivery: track, want: &want{reason: ReasonUnmappedEvent}, noRequest: true},
		{name: "404 unknown slug", events: map[string]string{"order_paid": "zzzzz"}, delivery: track,
			want: &want{reason: ReasonVendorRejected, status: 404, code: "EVENT_TYPE_DOES_NOT_EXIST"}},
		{name: "403 wrong dev key", events: slugs, delivery: track, settings: map[string]any{"dev_key": "nope"},
			want: &want{reason: ReasonVendorRejected, status: 403, code: "INVALID_PARAMETERS"}},
		{name: "429 retries after its Retry-After", events: slugs, delivery: track, fault: &emulator.Fault{Status: 429, RetryAfter: "7"},
			want: &want{reason: ReasonRetriesExhausted, transient: true, status: 429}},
		{name: "500 retries", events: slugs, delivery: track, fault: &emulator.Fault{Status: 500},
			want: &want{reason: ReasonRetriesExhausted, transient: true, status: 500}},
	})
}

func TestMetrixGateway(t *testing.T) {
	creds := map[string]any{"app_id": "demoapp", "api_key": "demo-api-key"}
	slugs := map[string]string{"order_paid": "aewqd", "purchase": "rvnue", "level_up": "zzzzz"}
	track := event(t, envelope.TypeTrack, envelope.Track{Name: "order_paid", Properties: props(), User: user})
	messages := func(b map[string]any) []any { m, _ := b["messages"].([]any); return m }
	runVendorCases(t, emulator.MetrixGateway, creds, []vendorCase{
		{name: "track registers the user then acts", delivery: track, events: slugs,
			check: func(t *testing.T, r emulator.Request, b map[string]any) {
				equal(t, "app header", r.Header.Get("X-Application-Id"), "demoapp")
				equal(t, "key header", r.Header.Get("X-API-Key"), "demo-api-key")
				equal(t, "ids", []any{b["customUserId"], b["metrixUserId"]}, []any{"user-42", "mx-1"})
				equal(t, "messages", messages(b), []any{
					map[string]any{"type": "user", "id": "evt-1:user", "time": json.Number("1795428899999")},
					map[string]any{"type": "action", "id": "evt-1", "time": json.Number("1795428900000"), "name": "aewqd",
						"attributes": map[string]any{"orderId": "A-1", "items": "3", "first": "true", "tags": `["a","b"]`}},
				})
			}},
		{name: "auto registration off", delivery: track, events: slugs, settings: map[string]any{"auto_register_user": false},
			check: func(t *testing.T, r emulator.Request, b map[string]any) {
				equal(t, "message count", len(messages(b)), 1)
			}},
		{name: "purchase is a revenue message", events: slugs,
			delivery: event(t, envelope.TypePurchase, envelope.Purchase{Track: envelope.Track{Name: "purchase", User: user}, Revenue: "53.7", Currency: "EUR"}),
			check: func(t *testing.T, r emulator.Request, b map[string]any) {
				equal(t, "revenue", messages(b)[1], map[string]any{"type": "revenue", "id": "evt-1", "time": json.Number("1795428900000"),
					"name": "rvnue", "revenue": json.Number("53.7"), "currency": "EUR"})
			}},
		{name: "identify is a user message",
			delivery: event(t, envelope.TypeIdentify, envelope.Identify{User: envelope.User{ID: "r.akbari"}, Traits: envelope.Traits{
				FirstName: "Reza", Gender: "Male", Birthday: "1990-04-03", Channels: []string{"SMS", "Push"},
				CustomAttributes: map[string]any{"loyalty_level": "vip", "orders": json.Number("12")}}}),
			check: func(t *testing.T, r emulator.Request, b map[string]any) {
				equal(t, "customUserId", b["customUserId"], "r.akbari")
				equal(t, "messages", messages(b), []any{map[string]any{
					"type": "user", "id": "evt-1", "time": json.Number("1795428900000"), "firstName": "Reza", "gender": "Male",
					"birthday": json.Number("639100800000"), "channels": []any{"SMS", "Push"},
					"customAttributes": map[string]any{"loyalty_level": "vip", "orders": "12"}}})
			}},
		{name: "currency outside IRR USD EUR", events: slugs,
			delivery: event(t, envelope.TypePurchase, envelope.Purchase{Track: envelope.Track{Name: "purchase", User: user}, Revenue: "1", Currency: "GBP"}),
			want:     &want{reason: ReasonInvalidForVendor}, noRequest: true},
		{name: "no usable user id", events: slugs,
			delivery: event(t, envelope.TypeTrack, envelope.Track{Name: "order_paid", User: envelope.User{AdvertisingID: "ad"}}),
			want:     &want{reason: ReasonInvalidForVendor}, noRequest: true},
		{name: "notify is not a Metrix call", delivery: event(t, envelope.TypeNotify, envelope.Notify{Message: "m", Target: envelope.Target{Type: "USER", ID: "u"}}),
			want: &want{reason: ReasonUnsupportedEvent}, noRequest: true},
		{name: "unmapped name", delivery: track, want: &want{reason: ReasonUnmappedEvent}, noRequest: true},
		{name: "400 BAD_REQUEST", events: slugs, delivery: track, fault: &emulator.Fault{Status: 400, Code: "BAD_REQUEST"},
			want: &want{reason: ReasonVendorRejected, status: 400, code: "BAD_REQUEST"}},
		{name: "403 S2S_FEATURE_NOT_AVAILABLE", events: slugs, delivery: track, settings: map[string]any{"app_id": "freeplan"},
			want: &want{reason: ReasonVendorRejected, status: 403, code: "S2S_FEATURE_NOT_AVAILABLE"}},
		{name: "403 INVALID_PARAMETERS", events: slugs, delivery: track, settings: map[string]any{"api_key": "wrong"},
			want: &want{reason: ReasonVendorRejected, status: 403, code: "INVALID_PARAMETERS"}},
		{name: "404 EVENT_TYPE_DOES_NOT_EXIST", events: map[string]string{"order_paid": "zzzzz"}, delivery: track,
			want: &want{reason: ReasonVendorRejected, status: 404, code: "EVENT_TYPE_DOES_NOT_EXIST"}},
		{name: "502 retries", events: slugs, delivery: track, fault: &emulator.Fault{Status: 502},
			want: &want{reason: ReasonRetriesExhausted, transient: true, status: 502}},
	})
}

func TestKenar(t *testing.T) {
	creds := map[string]any{"api_key": "demo-kenar-key", "access_token": "demo-kenar-token"}
	notify := func(target envelope.Target, buttons ...envelope.Button) *Delivery {
		return event(t, envelope.TypeNotify, envelope.Notify{Message: "10 new views", Target: target, Buttons: buttons})
	}
	post := envelope.Target{Type: "POST", ID: "AaBbCcDd"}
	runVendorCases(t, emulator.Kenar, creds, []vendorCase{
		{name: "send event to a post", delivery: notify(post, envelope.Button{Title: "See stats"}),
			check: func(t *testing.T, r emulator.Request, b map[string]any) {
				equal(t, "path", r.Path, "/experimental/open-platform/events/send")
				equal(t, "query", r.Query, "message=10+new+views&target_resource_id=AaBbCcDd&target_type=POST")
				equal(t, "api key", r.Header.Get("X-API-Key"), "demo-kenar-key")
				equal(t, "bearer", r.Header.Get("Authorization"), "Bearer demo-kenar-token")
				equal(t, "body", b, map[string]any(nil))
			}},
		{name: "button title too short", delivery: notify(post, envelope.Button{Title: "Go!"}),
			want: &want{reason: ReasonInvalidForVendor}, noRequest: true},
		{name: "button title too long", delivery: notify(post, envelope.Button{Title: strings.Repeat("ب", 51)}),
			want: &want{reason: ReasonInvalidForVendor}, noRequest: true},
		{name: "track is not a Kenar call", delivery: event(t, envelope.TypeTrack, envelope.Track{Name: "x", User: user}),
			want: &want{reason: ReasonUnsupportedEvent}, noRequest: true},
		{name: "401 wrong API key", delivery: notify(post), settings: map[string]any{"api_key": "nope"},
			want: &want{reason: ReasonVendorRejected, status: 401, code: "UNAUTHENTICATED"}},
		{name: "403 token without scope", delivery: notify(post), settings: map[string]any{"access_token": "nope"},
			want: &want{reason: ReasonVendorRejected, status: 403, code: "PERMISSION_DENIED"}},
		{name: "404 unknown target", delivery: notify(envelope.Target{Type: "USER", ID: "missing-1"}),
			want: &want{reason: ReasonVendorRejected, status: 404, code: "NOT_FOUND"}},
		{name: "429 quota retries", delivery: notify(post), fault: &emulator.Fault{Status: 429, RetryAfter: "60"},
			want: &want{reason: ReasonRetriesExhausted, transient: true, status: 429, code: "RESOURCE_EXHAUSTED"}},
	})
}

func TestTimeoutsAndConnectionErrorsRetry(t *testing.T) {
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(3 * time.Second):
		case <-r.Context().Done():
		}
	}))
	defer slow.Close()
	creds := map[string]any{"app_id": "a", "access_token": "t"}
	d := event(t, envelope.TypeTrack, envelope.Track{Name: "x", User: user})
	var node yaml.Node
	_ = node.Encode(creds)
	chabok, _ := Lookup(emulator.Chabok)
	s, err := chabok.New(config.Sink{Name: "c", BaseURL: slow.URL, Concurrency: 1, Timeout: 100 * time.Millisecond, Settings: node}, "s")
	if err != nil {
		t.Fatal(err)
	}
	checkOutcome(t, s.Deliver(context.Background(), d), &want{reason: ReasonRetriesExhausted, transient: true})

	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	s = newSink(t, emulator.Chabok, closed.URL, nil, creds)
	checkOutcome(t, s.Deliver(context.Background(), d), &want{reason: ReasonRetriesExhausted, transient: true})
}

func TestRetryAfterIsReported(t *testing.T) {
	emu := emulator.New(emulator.DemoConfig())
	v := emu.Vendor(emulator.Chabok)
	srv := httptest.NewServer(v)
	defer srv.Close()
	s := newSink(t, emulator.Chabok, emulator.BaseURL(emulator.Chabok, srv.Listener.Addr().String()), nil,
		map[string]any{"app_id": "demoapp", "access_token": "demo-chabok-token"})
	d := event(t, envelope.TypeTrack, envelope.Track{Name: "x", User: user})
	for _, tc := range []struct {
		header string
		want   time.Duration
	}{{"7", 7 * time.Second}, {time.Now().Add(90 * time.Second).UTC().Format(http.TimeFormat), 90 * time.Second}, {"soon", 0}} {
		v.SetFault(emulator.Fault{Status: 503, RetryAfter: tc.header, Count: 1})
		var e *Error
		if !errors.As(s.Deliver(context.Background(), d), &e) {
			t.Fatal("want *Error")
		}
		if diff := e.RetryAfter - tc.want; diff < -2*time.Second || diff > 0 {
			t.Errorf("Retry-After %q read as %s, want %s", tc.header, e.RetryAfter, tc.want)
		}
	}
}

func TestFindCodeWhateverTheShape(t *testing.T) {
	tests := []struct{ body, code, msg string }{
		{`{"error":{"name":"Error","status":401,"message":"Authorization Required","code":"AUTHORIZATION_REQUIRED"}}`, "AUTHORIZATION_REQUIRED", "Authorization Required"},
		{`{"code":"EVENT_TYPE_DOES_NOT_EXIST","message":"slug"}`, "EVENT_TYPE_DOES_NOT_EXIST", "slug"},
		{`{"status":403,"error":"INVALID_PARAMETERS"}`, "INVALID_PARAMETERS", ""},
		{`{"errors":[{"errorCode":"S2S_FEATURE_NOT_AVAILABLE","detail":"plan"}]}`, "S2S_FEATURE_NOT_AVAILABLE", "plan"},
		{`{"data":{"error":{"reason":"BAD_REQUEST"}}}`, "BAD_REQUEST", ""},
		{`<html>502 Bad Gateway</html>`, "", "<html>502 Bad Gateway</html>"},
		{``, "", ""},
		{`"EVENT_TYPE_DOES_NOT_EXIST"`, "", ""},
		{`{"error":"Error","message":"lower case prose is not a code"}`, "", "lower case prose is not a code"},
	}
	for _, tt := range tests {
		code, msg := findCode([]byte(tt.body))
		if code != tt.code || msg != tt.msg {
			t.Errorf("findCode(%s) = %q, %q; want %q, %q", tt.body, code, msg, tt.code, tt.msg)
		}
	}
}

func BenchmarkRequestBuild(b *testing.B) {
	slugs := map[string]string{"order_paid": "aewqd"}
	track := event(b, envelope.TypeTrack, envelope.Track{Name: "order_paid", Properties: props(), User: user})
	notify := event(b, envelope.TypeNotify, envelope.Notify{Message: "m", Target: envelope.Target{Type: "USER", ID: "u"}})
	type builder interface {
		request(*Delivery) (*http.Request, error)
	}
	// The Metrix gateway's request reserves the user's times first, so it
	// takes a context; without this the benchmark panicked on it.
	type ctxBuilder interface {
		request(context.Context, *Delivery) (*http.Request, error)
	}
	for _, bc := range []struct {
		vendor   string
		settings map[string]any
		d        *Delivery
	}{
		{emulator.Chabok, map[string]any{"app_id": "a", "access_token": "t"}, track},
		{emulator.MetrixS2S, map[string]any{"app_id": "a", "dev_key": "k"}, track},
		{emulator.MetrixGateway, map[string]any{"app_id": "a", "api_key": "k"}, track},
		{emulator.Kenar, map[string]any{"api_key": "k", "access_token": "t"}, notify},
	} {
		var request func(*Delivery) (*http.Request, error)
		switch s := newSink(b, bc.vendor, "http://127.0.0.1:1", slugs, bc.settings).(type) {
		case builder:
			request = s.request
		case ctxBuilder:
			request = func(d *Delivery) (*http.Request, error) { return s.request(context.Background(), d) }
		default:
			b.Fatalf("%s builds no request", bc.vendor)
		}
		b.Run(bc.vendor, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := request(bc.d); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
