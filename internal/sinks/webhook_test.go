package sinks_test

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// receiver verifies Standard Webhooks signatures with the specification's
// own Go library (an implementation independent of Chapar's) and records
// what it accepted.
type receiver struct {
	t        *testing.T
	secrets  []string // the receiver's own: one, or the new one mid-rotation
	tamper   bool     // a proxy in between changes the body after signing
	mu       sync.Mutex
	got      []*http.Request
	bodies   [][]byte
	verified int
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	if rc.tamper {
		body = []byte(strings.Replace(string(body), "order_paid", "order_free", 1))
	}
	ok := false
	for _, s := range rc.secrets {
		wh, err := standardwebhooks.NewWebhook(s)
		if err != nil {
			rc.t.Errorf("receiver secret: %v", err)
			continue
		}
		if wh.Verify(body, r.Header) == nil {
			ok = true
		}
	}
	rc.mu.Lock()
	rc.got = append(rc.got, r)
	rc.bodies = append(rc.bodies, body)
	if ok {
		rc.verified++
	}
	rc.mu.Unlock()
	if !ok {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"error":{"code":"BAD_SIGNATURE","message":"no matching signature"}}`)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func newSecret(t *testing.T) string {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

// webhookSink builds a webhook sink from YAML settings as an operator
// writes them (with ${VAR} secrets), through config.Parse and the registry.
func webhookSink(t *testing.T, url, settings string, env map[string]string) sinks.Sink {
	t.Helper()
	cfg, err := config.Parse([]byte("sinks:\n  - name: hook\n    vendor: webhook\n    timeout: 2s\n    settings:\n      url: "+url+"\n"+indent(settings, "      ")),
		func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	built, err := sinks.Build(cfg.Sinks)
	if err != nil {
		t.Fatal(err)
	}
	return built["hook"]
}

func indent(s, by string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if l != "" {
			b.WriteString(by + l + "\n")
		}
	}
	return b.String()
}

func orderPaid(t *testing.T) *sinks.Delivery {
	t.Helper()
	env, err := envelope.New(envelope.TypeTrack, "shop", envelope.Track{Name: "order_paid", User: envelope.User{ID: "u-1"},
		Properties: map[string]any{"orderId": "A-1"}},
		envelope.WithID("evt-42"), envelope.WithTime(time.Date(2026, 11, 23, 10, 15, 0, 0, time.UTC)),
		envelope.WithExtension("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))
	if err != nil {
		t.Fatal(err)
	}
	ev, err := env.Decode()
	if err != nil {
		t.Fatal(err)
	}
	return &sinks.Delivery{Event: ev, ReceivedAt: time.Now()}
}

func dead(t *testing.T, err error, status int, code string) {
	t.Helper()
	var e *sinks.Error
	if !errors.As(err, &e) || e.Transient || e.Reason != outcome.VendorRejected || e.Status != status || e.Code != code {
		t.Fatalf("want a dead letter %d %s, got %v", status, code, err)
	}
}

func TestWebhookSignsPerStandardWebhooks(t *testing.T) {
	secret := newSecret(t)
	rc := &receiver{t: t, secrets: []string{secret}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	s := webhookSink(t, srv.URL, `
signing:
  secrets: ["${HOOK_SECRET}"]
headers:
  Authorization: "Bearer ${file:`+writeSecret(t, "tok-from-file\n")+`}"
  X-Team: growth
`, map[string]string{"HOOK_SECRET": secret})
	d := orderPaid(t)
	if err := s.Deliver(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	if rc.verified != 1 {
		t.Fatalf("receiver verified %d of %d", rc.verified, len(rc.got))
	}
	r := rc.got[0]
	if r.Method != http.MethodPost || r.Header.Get("webhook-id") != "evt-42" {
		t.Errorf("method %s, webhook-id %q", r.Method, r.Header.Get("webhook-id"))
	}
	if ts := r.Header.Get("webhook-timestamp"); ts == "" || strings.Count(r.Header.Get("webhook-signature"), "v1,") != 1 {
		t.Errorf("timestamp %q, signature %q", ts, r.Header.Get("webhook-signature"))
	}
	if r.Header.Get("Authorization") != "Bearer tok-from-file" || r.Header.Get("X-Team") != "growth" {
		t.Errorf("configured headers: %v", r.Header)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/cloudevents+json; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	var ce map[string]any
	if err := json.Unmarshal(rc.bodies[0], &ce); err != nil {
		t.Fatal(err)
	}
	if ce["id"] != "evt-42" || ce["type"] != envelope.TypeTrack || ce["source"] != "shop" || ce["traceparent"] == nil ||
		ce["data"].(map[string]any)["name"] != "order_paid" {
		t.Errorf("structured body %s", rc.bodies[0])
	}
}

func writeSecret(t *testing.T, v string) string {
	t.Helper()
	f := t.TempDir() + "/secret"
	if err := os.WriteFile(f, []byte(v), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func TestWebhookRotationSignsWithEverySecret(t *testing.T) {
	old, next := newSecret(t), newSecret(t)
	s := func(url string) sinks.Sink {
		return webhookSink(t, url, `
signing:
  secrets: ["`+next+`", "`+old+`"]
`, nil)
	}
	// Receivers that still hold only the old secret, and those already on
	// the new one, both verify.
	for name, secrets := range map[string][]string{"old": {old}, "new": {next}} {
		rc := &receiver{t: t, secrets: secrets}
		srv := httptest.NewServer(rc)
		if err := s(srv.URL).Deliver(context.Background(), orderPaid(t)); err != nil {
			t.Errorf("receiver with the %s secret: %v", name, err)
		}
		if sig := rc.got[0].Header.Get("webhook-signature"); len(strings.Fields(sig)) != 2 {
			t.Errorf("want two space-separated signatures, got %q", sig)
		}
		srv.Close()
	}
	// A receiver with a secret Chapar does not have refuses: dead letter.
	rc := &receiver{t: t, secrets: []string{newSecret(t)}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	dead(t, s(srv.URL).Deliver(context.Background(), orderPaid(t)), 401, "BAD_SIGNATURE")
}

func TestWebhookTamperedBodyIsRefused(t *testing.T) {
	secret := newSecret(t)
	rc := &receiver{t: t, secrets: []string{secret}, tamper: true}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	s := webhookSink(t, srv.URL, "signing: {secrets: [\""+secret+"\"]}", nil)
	dead(t, s.Deliver(context.Background(), orderPaid(t)), 401, "BAD_SIGNATURE")
	if rc.verified != 0 {
		t.Error("a tampered body verified")
	}
}

func TestWebhookBinaryAndDataModesAndPlainHMAC(t *testing.T) {
	var got *http.Request
	var body []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, body = r, must(io.ReadAll(r.Body))
	}))
	defer srv.Close()
	data := `{"name":"order_paid","properties":{"orderId":"A-1"},"user":{"id":"u-1"}}`

	s := webhookSink(t, srv.URL, "body: binary\nmethod: put\nhmac: {header: X-Hub-Signature-256, secret: k3y, prefix: sha256=}", nil)
	if err := s.Deliver(context.Background(), orderPaid(t)); err != nil {
		t.Fatal(err)
	}
	if got.Method != http.MethodPut || string(body) != data || got.Header.Get("Content-Type") != "application/json" {
		t.Errorf("binary: %s %s %q", got.Method, body, got.Header.Get("Content-Type"))
	}
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": "evt-42", "ce-source": "shop", "ce-type": envelope.TypeTrack,
		"ce-time": "2026-11-23T10:15:00Z", "ce-traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"} {
		if got.Header.Get(k) != v {
			t.Errorf("%s: %q, want %q", k, got.Header.Get(k), v)
		}
	}
	m := hmac.New(sha256.New, []byte("k3y"))
	m.Write(body)
	if want := "sha256=" + hex.EncodeToString(m.Sum(nil)); got.Header.Get("X-Hub-Signature-256") != want {
		t.Errorf("plain HMAC %q, want %q", got.Header.Get("X-Hub-Signature-256"), want)
	}
	if got.Header.Get("webhook-signature") != "" {
		t.Error("signed without signing.secrets")
	}

	s = webhookSink(t, srv.URL, "body: data", nil)
	if err := s.Deliver(context.Background(), orderPaid(t)); err != nil {
		t.Fatal(err)
	}
	if string(body) != data || got.Header.Get("ce-id") != "" {
		t.Errorf("data: %s, ce-id %q", body, got.Header.Get("ce-id"))
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestWebhookStatusTableAndCode(t *testing.T) {
	var status int
	var answer, retryAfter string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if retryAfter != "" {
			w.Header().Set("Retry-After", retryAfter)
		}
		w.WriteHeader(status)
		fmt.Fprint(w, answer)
	}))
	defer srv.Close()
	type want struct {
		delivered, transient bool
		code                 string
	}
	run := func(s sinks.Sink, st int, body string, w want) {
		t.Helper()
		status, answer = st, body
		err := s.Deliver(context.Background(), orderPaid(t))
		var e *sinks.Error
		switch {
		case w.delivered:
			if err != nil {
				t.Errorf("%d: want delivered, got %v", st, err)
			}
		case !errors.As(err, &e) || e.Transient != w.transient || e.Status != st || e.Code != w.code:
			t.Errorf("%d: want transient=%v code %q, got %v", st, w.transient, w.code, err)
		case w.transient && e.Reason != outcome.RetriesExhausted, !w.transient && e.Reason != outcome.VendorRejected:
			t.Errorf("%d: reason %s", st, e.Reason)
		}
	}
	def := webhookSink(t, srv.URL, "", nil)
	for _, st := range []int{200, 201, 202, 204} {
		run(def, st, "", want{delivered: true})
	}
	for _, st := range []int{400, 401, 403, 404, 410, 422, 409, 301} {
		run(def, st, `{"code":"NOPE"}`, want{code: "NOPE"})
	}
	for _, st := range []int{408, 429, 500, 502, 503} {
		run(def, st, "", want{transient: true})
	}
	retryAfter = "7"
	status, answer = 429, ""
	var e *sinks.Error
	if !errors.As(def.Deliver(context.Background(), orderPaid(t)), &e) || e.RetryAfter != 7*time.Second {
		t.Errorf("Retry-After not honoured: %v", e)
	}
	retryAfter = ""

	custom := webhookSink(t, srv.URL, `
statuses:
  success: ["200"]
  retry: ["409", "5xx"]
  dead_letter: ["501", "4xx"]
code: /errors/0/code
message: errors.0.detail
`, nil)
	run(custom, 200, "", want{delivered: true})
	run(custom, 202, "", want{code: ""}) // 2xx is not success here: unlisted → dead letter
	run(custom, 409, "", want{transient: true})
	run(custom, 503, "", want{transient: true})
	run(custom, 501, `{"errors":[{"code":4711,"detail":"not built"}]}`, want{code: "4711"})
	run(custom, 422, `{"errors":[{"code":"too_big","detail":"x"}]}`, want{code: "too_big"})
}

func TestWebhookSettingsAreValidated(t *testing.T) {
	for _, tt := range []struct{ settings, want string }{
		{"{}", "sinks[0].settings.url: is required"},
		{"{url: ftp://x}", "sinks[0].settings.url"},
		{"{url: http://x, method: GET}", "sinks[0].settings.method"},
		{"{url: http://x, body: xml}", "sinks[0].settings.body"},
		{"{url: http://x, signing: {secrets: [abc]}}", "sinks[0].settings.signing.secrets[0]: a Standard Webhooks secret starts with whsec_"},
		{"{url: http://x, signing: {secrets: [whsec_abc]}}", "sinks[0].settings.signing.secrets[0]: after whsec_"},
		{"{url: http://x, hmac: {header: X-Sig}}", "sinks[0].settings.hmac: header and secret go together"},
		{"{url: http://x, statuses: {retry: [404]}}", "sinks[0].settings.statuses.retry[0]: 404 is in two lists"},
		{"{url: http://x, statuses: {success: [2xy]}}", "sinks[0].settings.statuses.success[0]"},
		{"{url: http://x, headers: {'Bad Header': v}}", "sinks[0].settings.headers"},
		{"{url: http://x, tempalte: y}", "field tempalte not found"},
		{"{url: http://x, template: '{{json .id'}", "sinks[0].settings.template: "},
		{"{url: http://x, template: '{{jsn .id}}'}", `sinks[0].settings.template: template:1: function "jsn" not defined`},
	} {
		cfg, err := config.Parse([]byte("sinks:\n  - name: s\n    vendor: webhook\n    settings: "+tt.settings+"\n"), func(string) (string, bool) { return "", false })
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sinks.Build(cfg.Sinks); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.settings, err, tt.want)
		}
	}
}
