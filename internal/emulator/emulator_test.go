package emulator_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/chapar-dev/chapar/internal/emulator"
)

// The emulator must reject what each vendor's docs forbid, or the sink
// tests that rely on it would prove nothing.
func TestEmulatorEnforcesTheDocumentedRules(t *testing.T) {
	emu := emulator.New(emulator.DemoConfig())
	servers := map[string]*httptest.Server{}
	for _, v := range emu.Names() {
		servers[v] = httptest.NewServer(emu.Vendor(v))
		defer servers[v].Close()
	}
	chabokOK := map[string]string{"X-Access-Token": "demo-chabok-token"}
	s2sOK := map[string]string{"Authorization": "demo-dev-key"}
	gwOK := map[string]string{"X-Application-Id": "demoapp", "X-API-Key": "demo-api-key"}
	kenarOK := map[string]string{"X-API-Key": "demo-kenar-key", "Authorization": "Bearer demo-kenar-token"}
	s2sBody := `{"metrixUserId":"m","metrixSessionId":"s","advertisingId":"a","eventSlug":"aewqd","eventTime":1795428900000%s}`
	gw := func(msg string) string { return `{"customUserId":"u","messages":[` + msg + `]}` }
	tests := []struct {
		name, vendor, path string
		header             map[string]string
		body               string
		status             int
		code               string
	}{
		{"chabok valid", emulator.Chabok, "/api/installations/track", chabokOK, `{"userId":"u","eventName":"e","eventTime":1795428900000,"eventData":{"a":[1,"x"],"b":true}}`, 200, ""},
		{"chabok both identities", emulator.Chabok, "/api/installations/track", chabokOK, `{"userId":"u","installationId":"i","eventName":"e"}`, 400, "INVALID_IDENTITY"},
		{"chabok no identity", emulator.Chabok, "/api/installations/track", chabokOK, `{"eventName":"e"}`, 400, "INVALID_IDENTITY"},
		{"chabok time in seconds", emulator.Chabok, "/api/installations/track", chabokOK, `{"userId":"u","eventName":"e","eventTime":1795428900}`, 400, "INVALID_EVENT"},
		{"chabok nested eventData", emulator.Chabok, "/api/installations/track", chabokOK, `{"userId":"u","eventName":"e","eventData":{"o":{"x":1}}}`, 400, "INVALID_EVENT"},
		{"chabok purchase without revenue", emulator.Chabok, "/api/installations/trackPurchase", chabokOK, `{"userId":"u","eventName":"e"}`, 400, "INVALID_EVENT"},
		{"chabok token", emulator.Chabok, "/api/installations/track", nil, `{"userId":"u","eventName":"e"}`, 401, "AUTHORIZATION_REQUIRED"},
		{"s2s valid", emulator.MetrixS2S, "/inappevent/demoapp", s2sOK, strings.Replace(s2sBody, "%s", `,"customAttributes":{"a":"b"},"customMetrics":{"n":1.5}`, 1), 200, ""},
		{"s2s both device ids", emulator.MetrixS2S, "/inappevent/demoapp", s2sOK, strings.Replace(s2sBody, "%s", `,"idfa":"i"`, 1), 400, "BAD_REQUEST"},
		{"s2s attribute not a string", emulator.MetrixS2S, "/inappevent/demoapp", s2sOK, strings.Replace(s2sBody, "%s", `,"customAttributes":{"a":1}`, 1), 400, "BAD_REQUEST"},
		{"s2s metric not a number", emulator.MetrixS2S, "/inappevent/demoapp", s2sOK, strings.Replace(s2sBody, "%s", `,"customMetrics":{"n":"1"}`, 1), 400, "BAD_REQUEST"},
		{"s2s unknown slug", emulator.MetrixS2S, "/inappevent/demoapp", s2sOK, strings.Replace(strings.Replace(s2sBody, "aewqd", "zzzzz", 1), "%s", "", 1), 404, "EVENT_TYPE_DOES_NOT_EXIST"},
		{"s2s dev key", emulator.MetrixS2S, "/inappevent/demoapp", map[string]string{"Authorization": "x"}, strings.Replace(s2sBody, "%s", "", 1), 403, "INVALID_PARAMETERS"},
		{"gateway valid", emulator.MetrixGateway, "/", gwOK, gw(`{"type":"user","id":"1","time":1795428900000},{"type":"revenue","id":"2","time":1795428900000,"name":"rvnue","revenue":1.5,"currency":"IRR"}`), 200, ""},
		{"gateway no user ids", emulator.MetrixGateway, "/", gwOK, `{"messages":[{"type":"user","id":"1","time":1795428900000}]}`, 400, "BAD_REQUEST"},
		{"gateway message without id", emulator.MetrixGateway, "/", gwOK, gw(`{"type":"user","time":1795428900000}`), 400, "BAD_REQUEST"},
		{"gateway bad currency", emulator.MetrixGateway, "/", gwOK, gw(`{"type":"revenue","id":"2","time":1795428900000,"name":"rvnue","revenue":1,"currency":"GBP"}`), 400, "BAD_REQUEST"},
		{"gateway attributes not strings", emulator.MetrixGateway, "/", gwOK, gw(`{"type":"action","id":"2","time":1795428900000,"name":"aewqd","attributes":{"a":1}}`), 400, "BAD_REQUEST"},
		{"gateway bad gender", emulator.MetrixGateway, "/", gwOK, gw(`{"type":"user","id":"1","time":1795428900000,"gender":"M"}`), 400, "BAD_REQUEST"},
		{"gateway unknown slug", emulator.MetrixGateway, "/", gwOK, gw(`{"type":"action","id":"2","time":1795428900000,"name":"zzzzz"}`), 404, "EVENT_TYPE_DOES_NOT_EXIST"},
		{"gateway wrong key", emulator.MetrixGateway, "/", map[string]string{"X-Application-Id": "demoapp", "X-API-Key": "x"}, gw(`{"type":"user","id":"1","time":1795428900000}`), 403, "INVALID_PARAMETERS"},
		{"gateway S2S off", emulator.MetrixGateway, "/", map[string]string{"X-Application-Id": "freeplan", "X-API-Key": "demo-api-key"}, gw(`{"type":"user","id":"1","time":1795428900000}`), 403, "S2S_FEATURE_NOT_AVAILABLE"},
		{"kenar valid", emulator.Kenar, "/experimental/open-platform/events/send?message=m&target_type=USER&target_resource_id=u", kenarOK, "", 200, ""},
		{"kenar bad target type", emulator.Kenar, "/experimental/open-platform/events/send?message=m&target_type=CHAT&target_resource_id=u", kenarOK, "", 400, ""},
		{"kenar no message", emulator.Kenar, "/experimental/open-platform/events/send?target_type=USER&target_resource_id=u", kenarOK, "", 400, ""},
		{"kenar api key", emulator.Kenar, "/experimental/open-platform/events/send?message=m&target_type=USER&target_resource_id=u", map[string]string{"Authorization": "Bearer demo-kenar-token"}, "", 401, ""},
		{"kenar subscription type", emulator.Kenar, "/v1/open-platform/events/subscriptions", kenarOK, `{"event_type":"NEW_MESSAGE"}`, 400, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodPost, servers[tt.vendor].URL+tt.path, strings.NewReader(tt.body))
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.status || (tt.code != "" && !strings.Contains(string(body), `"`+tt.code+`"`)) {
				t.Errorf("got %d %s, want %d %s", resp.StatusCode, body, tt.status, tt.code)
			}
			if tt.vendor == emulator.Kenar && tt.status >= 400 {
				var st struct{ Code int }
				if json.Unmarshal(body, &st) != nil || st.Code == 0 {
					t.Errorf("Kenar error is not a google.rpc.Status: %s", body)
				}
			}
		})
	}
}

func TestFaultControlAPI(t *testing.T) {
	emu := emulator.New(emulator.DemoConfig())
	srv := httptest.NewServer(emu.Vendor(emulator.Chabok))
	defer srv.Close()
	post := func(path, body string) int {
		resp, err := http.Post(srv.URL+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if got := post("/_emulator/fault", `{"status":503,"latency":"50ms","retry_after":"3","count":2}`); got != http.StatusNoContent {
		t.Fatalf("set fault: %d", got)
	}
	for i, want := range []int{503, 503, 401} { // then back to validating (no token)
		start := time.Now()
		resp, err := http.Post(srv.URL+"/api/installations/track", "application/json", strings.NewReader(`{}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("request %d: %d, want %d", i, resp.StatusCode, want)
		}
		if want == 503 && (resp.Header.Get("Retry-After") != "3" || time.Since(start) < 50*time.Millisecond) {
			t.Errorf("fault without its Retry-After or latency")
		}
	}
	if got := post("/_emulator/fault", `{"status":42}`); got != http.StatusBadRequest {
		t.Errorf("bad fault accepted: %d", got)
	}
	resp, err := http.Get(srv.URL + "/_emulator/requests")
	if err != nil {
		t.Fatal(err)
	}
	var reqs []emulator.Request
	_ = json.NewDecoder(resp.Body).Decode(&reqs)
	resp.Body.Close()
	if len(reqs) != 3 {
		t.Errorf("recorded %d requests, want 3", len(reqs))
	}
}

// A long run (a benchmark, a soak) must not grow the emulator without
// bound: it keeps the last MaxRecorded requests, and its counts stay exact.
func TestRecordsAreBoundedAndCountsExact(t *testing.T) {
	const total, faulted = 50_000, 1_234
	v := emulator.New(emulator.DemoConfig()).Vendor(emulator.Kenar)
	v.SetFault(emulator.Fault{Status: 503, Count: faulted})
	send := func(i int) {
		// Kenar takes its arguments in the query: i marks each request.
		target := "/experimental/open-platform/events/send?message=m&target_type=USER&target_resource_id=" + strconv.Itoa(i)
		req := httptest.NewRequest(http.MethodPost, target, nil)
		req.Header.Set("X-API-Key", "demo-kenar-key")
		req.Header.Set("Authorization", "Bearer demo-kenar-token")
		v.ServeHTTP(httptest.NewRecorder(), req)
	}
	for i := range total {
		send(i)
	}
	if got := v.Count(0); got != total {
		t.Errorf("Count(0) = %d, want %d", got, total)
	}
	if got := v.Count(503); got != faulted {
		t.Errorf("Count(503) = %d, want %d", got, faulted)
	}
	if got := v.Count(200); got != total-faulted {
		t.Errorf("Count(200) = %d, want %d", got, total-faulted)
	}
	reqs := v.Requests()
	if len(reqs) != emulator.MaxRecorded {
		t.Fatalf("kept %d requests, want the last %d", len(reqs), emulator.MaxRecorded)
	}
	for j, r := range reqs { // the most recent, oldest first
		want := strconv.Itoa(total - emulator.MaxRecorded + j)
		if !strings.HasSuffix(r.Query, "target_resource_id="+want) {
			t.Fatalf("request %d is %q, want target_resource_id=%s", j, r.Query, want)
		}
	}

	v.Reset()
	if v.Count(0) != 0 || len(v.Requests()) != 0 {
		t.Errorf("after Reset: %d counted, %d kept", v.Count(0), len(v.Requests()))
	}
	send(0)
	if v.Count(200) != 1 || len(v.Requests()) != 1 {
		t.Errorf("after Reset and one request: %d counted, %d kept", v.Count(200), len(v.Requests()))
	}
}

// The emulated webhook receiver verifies with the Standard Webhooks
// library and checks a CloudEvent's required attributes.
func TestWebhookReceiverVerifiesSignatures(t *testing.T) {
	v := emulator.New(emulator.DemoConfig()).Vendor(emulator.Webhook)
	srv := httptest.NewServer(v)
	defer srv.Close()
	url := emulator.BaseURL(emulator.Webhook, srv.Listener.Addr().String())
	secret := emulator.DemoSettings(emulator.Webhook)["signing"].(map[string]any)["secrets"].([]any)[0].(string)
	post := func(path, ct, body string, sign func(h http.Header)) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, url+path, strings.NewReader(body))
		req.Header.Set("Content-Type", ct)
		sign(req.Header)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	signed := func(key, body string) func(h http.Header) {
		return func(h http.Header) {
			wh, err := standardwebhooks.NewWebhook(key)
			if err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			sig, err := wh.Sign("msg-1", now, []byte(body))
			if err != nil {
				t.Fatal(err)
			}
			h.Set("webhook-id", "msg-1")
			h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
			h.Set("webhook-signature", sig)
		}
	}
	ce := `{"specversion":"1.0","id":"e-1","source":"s","type":"chapar.track","data":{}}`
	for _, tt := range []struct {
		name, path, ct, body string
		sign                 func(h http.Header)
		want                 int
	}{
		{"structured", "", "application/cloudevents+json", ce, signed(secret, ce), 200},
		{"batch", "", "application/cloudevents-batch+json", "[" + ce + "," + ce + "]", signed(secret, "["+ce+","+ce+"]"), 200},
		{"data", "", "application/json", `{"any":"shape"}`, signed(secret, `{"any":"shape"}`), 200},
		{"unsigned", "", "application/cloudevents+json", ce, func(http.Header) {}, 401},
		{"other secret", "", "application/cloudevents+json", ce, signed("whsec_MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=", ce), 401},
		{"signed another body", "", "application/cloudevents+json", ce, signed(secret, `{}`), 401},
		{"not a CloudEvent", "", "application/cloudevents+json", `{"id":"x"}`, signed(secret, `{"id":"x"}`), 400},
		{"not JSON", "", "application/json", `id=x`, signed(secret, `id=x`), 400},
		{"elsewhere", "/x", "application/json", `{}`, signed(secret, `{}`), 404},
	} {
		if got := post(tt.path, tt.ct, tt.body, tt.sign); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
}

// The Metrix gateway answers 2xx to a second message of one user at the
// same time and drops it (docs.metrix.ir, API troubleshooting); the
// emulator must drop it too, and say so, or a test of Chapar's times would
// prove nothing.
func TestMetrixGatewayDropsAUsersSecondMessageAtOneTime(t *testing.T) {
	msg := func(id string, at int64) string {
		return `{"type":"action","id":"` + id + `","time":` + strconv.FormatInt(at, 10) + `,"name":"aewqd"}`
	}
	req := func(ids, msgs string) string { return `{` + ids + `"messages":[` + msgs + `]}` }
	const t0 = 1795428900000
	tests := []struct {
		name     string
		requests []string
		dropped  []string // ids, in order
	}{
		{"distinct times", []string{req(`"customUserId":"u",`, msg("a", t0)+","+msg("b", t0+1))}, nil},
		{"same time in one request", []string{req(`"customUserId":"u",`, msg("a", t0)+","+msg("b", t0))}, []string{"b"}},
		{"same time across requests", []string{req(`"customUserId":"u",`, msg("a", t0)), req(`"customUserId":"u",`, msg("b", t0))}, []string{"b"}},
		{"same metrixUserId, other customUserId", []string{req(`"customUserId":"u","metrixUserId":"m",`, msg("a", t0)), req(`"customUserId":"v","metrixUserId":"m",`, msg("b", t0))}, []string{"b"}},
		{"same customUserId, metrixUserId only in one", []string{req(`"customUserId":"u","metrixUserId":"m",`, msg("a", t0)), req(`"customUserId":"u",`, msg("b", t0))}, []string{"b"}},
		{"other users at the same time", []string{req(`"customUserId":"u",`, msg("a", t0)), req(`"customUserId":"v",`, msg("b", t0)), req(`"metrixUserId":"m",`, msg("c", t0))}, nil},
		{"a re-sent id is de-duplicated, not dropped", []string{req(`"customUserId":"u",`, msg("a", t0)), req(`"customUserId":"u",`, msg("a", t0)), req(`"customUserId":"u",`, msg("a", t0+5))}, nil},
		{"a dropped message's retry stays dropped", []string{req(`"customUserId":"u",`, msg("a", t0)+","+msg("b", t0)), req(`"customUserId":"u",`, msg("b", t0+1))}, []string{"b"}},
	}
	emu := emulator.New(emulator.DemoConfig())
	v := emu.Vendor(emulator.MetrixGateway)
	srv := httptest.NewServer(v)
	defer srv.Close()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v.Reset()
			for _, body := range tt.requests {
				req, _ := http.NewRequest(http.MethodPost, srv.URL+"/", strings.NewReader(body))
				req.Header.Set("X-Application-Id", "demoapp")
				req.Header.Set("X-API-Key", "demo-api-key")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("%s answered %d", body, resp.StatusCode)
				}
			}
			var got []string
			for _, d := range v.Dropped() {
				got = append(got, d.ID)
			}
			if strings.Join(got, " ") != strings.Join(tt.dropped, " ") {
				t.Errorf("dropped %v, want %v", got, tt.dropped)
			}
			resp, err := http.Get(srv.URL + "/_emulator/dropped")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var listed []emulator.Dropped
			if err := json.NewDecoder(resp.Body).Decode(&listed); err != nil || len(listed) != len(tt.dropped) {
				t.Errorf("control API lists %v (%v), want %d", listed, err, len(tt.dropped))
			}
		})
	}
}
