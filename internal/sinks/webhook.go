package sinks

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"text/template"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// A generic signed webhook: for a vendor Chapar has no code for, or a
// team's own service.
//
//	<method> <url>
//	<headers from settings.headers>
//	webhook-id: <event id>               (Standard Webhooks, when signing.secrets is set)
//	webhook-timestamp: <unix seconds>
//	webhook-signature: v1,<base64 HMAC-SHA256(key, id.timestamp.body)> [v1,<…> per secret]
//	<hmac.header>: <prefix><hex HMAC-SHA256(hmac.secret, body)>  (when hmac.header is set)
//
// Body (settings.body), as the CloudEvents HTTP binding has it:
//
//	structured  the whole event, Content-Type: application/cloudevents+json (default)
//	binary      the event's data, its attributes as ce-* headers
//	data        the event's data only
//
// settings.template, when set, renders the body instead: a Go text/template
// over the event as its structured JSON has it (.id, .type, .data.user.id,
// .traceparent, …), which must render JSON (see webhookTemplate).
//
// Every event type is accepted: the receiver decides what it means. With a
// batch key, a request carries a JSON array of the bodies (webhook_batch.go).
//
// Responses, per settings.statuses (defaults below); a status in none of the
// lists is a dead letter. An exact status in a list wins over a class (5xx).
//
//	success      2xx                             delivered
//	dead_letter  400, 401, 403, 404, 410, 422    dead letter
//	retry        408, 429, 5xx                   retry (Retry-After honoured)
//
// The vendor code of a dead letter is read at settings.code (a JSON pointer
// /error/code or a dotted path error.code), else searched for as for every
// vendor.

// Body modes.
const (
	webhookStructured = "structured"
	webhookBinary     = "binary"
	webhookData       = "data"
)

type webhookSettings struct {
	// URL is where events go (required); base_url, when set, replaces it
	// as it replaces every vendor's documented URL.
	URL    string `yaml:"url"`
	Method string `yaml:"method"`
	// Headers are sent with every request; values may be ${VAR} or
	// ${file:/path} secrets.
	Headers map[string]config.Secret `yaml:"headers"`
	Body    string                   `yaml:"body"`
	// Template, when set, renders the body (a JSON value) from the event.
	Template string         `yaml:"template"`
	Signing  webhookSigning `yaml:"signing"`
	HMAC     webhookHMAC    `yaml:"hmac"`
	// Statuses classify answers; a list written replaces its default.
	Statuses webhookStatuses `yaml:"statuses"`
	// Code and Message locate the vendor's code and message in a JSON
	// error body.
	Code    string `yaml:"code"`
	Message string `yaml:"message"`
}

// webhookSigning is Standard Webhooks signing.
type webhookSigning struct {
	// Secrets are whsec_<base64 key>; during a rotation list the new and the
	// old: each request is signed with all of them.
	Secrets []config.Secret `yaml:"secrets"`
}

// webhookHMAC is a plain HMAC-SHA256 of the body in one header.
type webhookHMAC struct {
	Header   string        `yaml:"header"`
	Secret   config.Secret `yaml:"secret"`
	Prefix   string        `yaml:"prefix"`   // e.g. sha256=
	Encoding string        `yaml:"encoding"` // hex (default) | base64
}

type webhookStatuses struct {
	Success    []string `yaml:"success"`
	DeadLetter []string `yaml:"dead_letter"`
	Retry      []string `yaml:"retry"`
}

func webhookDefaults() webhookSettings {
	return webhookSettings{
		Method: http.MethodPost,
		Body:   webhookStructured,
		HMAC:   webhookHMAC{Encoding: "hex"},
		Statuses: webhookStatuses{
			Success:    []string{"2xx"},
			DeadLetter: []string{"400", "401", "403", "404", "410", "422"},
			Retry:      []string{"408", "429", "5xx"},
		},
	}
}

func init() {
	Register(Spec[webhookSettings]{
		Name:     "webhook",
		Summary:  "any HTTP endpoint: the CloudEvent, signed per Standard Webhooks",
		Defaults: webhookDefaults,
		Validate: validateWebhook,
		New:      newWebhook,
		Batches:  true,
	})
}

type webhook struct {
	name    string
	url     string
	s       webhookSettings
	tmpl    *template.Template // nil: the body is per s.Body
	keys    [][]byte           // Standard Webhooks keys, decoded
	headers http.Header
	errors  errorTable
	client  *httpClient
	now     func() time.Time
}

func validateWebhook(s *webhookSettings, at string) error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{at, key}, args...)...))
	}
	if s.URL == "" {
		bad("url", "is required: where to send events (https://…)")
	} else {
		if u, err := url.Parse(s.URL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("url", "%q is not an http or https URL", s.URL)
		}
	}
	s.Method = strings.ToUpper(s.Method)
	switch s.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
	default:
		bad("method", "is %q; use POST (default), PUT or PATCH", s.Method)
	}
	switch s.Body {
	case webhookStructured, webhookBinary, webhookData:
	default:
		bad("body", "is %q; use structured (default), binary or data", s.Body)
	}
	if s.Template != "" {
		if _, err := webhookTemplate(s.Template); err != nil {
			bad("template", "%v", err)
		}
	}
	for k := range s.Headers {
		if !validHeaderName(k) {
			bad("headers", "%q is not a header name", k)
		}
	}
	for i, sec := range s.Signing.Secrets {
		if _, err := webhookKey(sec.Value()); err != nil {
			bad(fmt.Sprintf("signing.secrets[%d]", i), "%v", err)
		}
	}
	if (s.HMAC.Header == "") != (s.HMAC.Secret.Value() == "") {
		bad("hmac", "header and secret go together: set both or neither")
	} else if s.HMAC.Header != "" && !validHeaderName(s.HMAC.Header) {
		bad("hmac.header", "%q is not a header name", s.HMAC.Header)
	}
	if e := s.HMAC.Encoding; e != "hex" && e != "base64" {
		bad("hmac.encoding", "is %q; use hex (default) or base64", e)
	}
	if _, err := s.Statuses.table(at + ".statuses"); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func validHeaderName(k string) bool {
	if k == "" {
		return false
	}
	for _, r := range k {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return true
}

// webhookKey decodes a Standard Webhooks secret: whsec_ then base64.
func webhookKey(secret string) ([]byte, error) {
	b64, ok := strings.CutPrefix(secret, "whsec_")
	if !ok {
		return nil, errors.New("a Standard Webhooks secret starts with whsec_ (whsec_<base64 key>)")
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil || len(key) < 24 || len(key) > 64 {
		return nil, errors.New("after whsec_ comes the base64 of a 24 to 64 byte key")
	}
	return key, nil
}

func newWebhook(cfg config.Sink, s webhookSettings) (Sink, error) {
	u := s.URL
	if cfg.BaseURL != "" {
		u = cfg.BaseURL // as for every vendor: a test receiver, a proxy
	}
	w := &webhook{name: cfg.Name, url: u, s: s, headers: http.Header{}, client: newHTTPClient(cfg), now: time.Now}
	if s.Template != "" {
		w.tmpl, _ = webhookTemplate(s.Template) // validated
	}
	for _, sec := range s.Signing.Secrets {
		key, _ := webhookKey(sec.Value()) // validated
		w.keys = append(w.keys, key)
	}
	for k, v := range s.Headers {
		w.headers.Set(k, v.Value())
	}
	classify, _ := s.Statuses.table("statuses") // validated
	w.errors = errorTable{Classify: classify}
	if s.Code != "" || s.Message != "" {
		w.errors.Code = func(body []byte) (string, string) {
			code, msg := findCode(body)
			if v, ok := jsonAt(body, s.Code); ok {
				code = v
			}
			if v, ok := jsonAt(body, s.Message); ok {
				msg = v
			}
			return code, msg
		}
	}
	return w, nil
}

func (w *webhook) Deliver(ctx context.Context, d *Delivery) error {
	req, err := w.request(d)
	if err != nil {
		return err
	}
	return call(ctx, w.client, req, w.errors)
}

func (w *webhook) request(d *Delivery) (*http.Request, error) {
	body, h, err := w.body(d)
	if err != nil {
		return nil, err
	}
	return w.signed(d.Event.ID, body, h)
}

// body is what one event's request carries, and the headers that go with
// it (the configured ones, Content-Type, ce-* in binary mode). A template
// that fails for this event is a permanent invalid_for_vendor.
func (w *webhook) body(d *Delivery) ([]byte, http.Header, error) {
	ev := &d.Event.Envelope
	h := w.headers.Clone()
	var body []byte
	switch w.s.Body {
	case webhookStructured:
		b, err := ev.Marshal()
		if err != nil {
			return nil, nil, fmt.Errorf("encode event: %w", err)
		}
		body = b
		h.Set("Content-Type", "application/cloudevents+json; charset=utf-8")
	case webhookBinary:
		body = ev.Data
		for k, v := range ceHeaders(ev) {
			h.Set(k, v)
		}
		h.Set("Content-Type", dataContentType(ev))
	case webhookData:
		body = ev.Data
		h.Set("Content-Type", dataContentType(ev))
	}
	if w.tmpl != nil {
		b, err := renderTemplate(w.tmpl, ev)
		if err != nil {
			return nil, nil, reject(ReasonInvalidForVendor, "sink %s: settings.template: %v", w.name, err)
		}
		body = b
		h.Set("Content-Type", "application/json")
	}
	return body, h, nil
}

// signed is the request for body, signed with webhook-id id.
func (w *webhook) signed(id string, body []byte, h http.Header) (*http.Request, error) {
	if len(w.keys) > 0 {
		ts := strconv.FormatInt(w.now().Unix(), 10)
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", ts)
		h.Set("webhook-signature", standardSignatures(w.keys, id, ts, body))
	}
	if w.s.HMAC.Header != "" {
		m := hmac.New(sha256.New, []byte(w.s.HMAC.Secret.Value()))
		m.Write(body)
		sum := hex.EncodeToString(m.Sum(nil))
		if w.s.HMAC.Encoding == "base64" {
			sum = base64.StdEncoding.EncodeToString(m.Sum(nil))
		}
		h.Set(w.s.HMAC.Header, w.s.HMAC.Prefix+sum)
	}
	req, err := http.NewRequest(w.s.Method, w.url, bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	for k, v := range h {
		req.Header[k] = v
	}
	return req, nil
}

// webhookTemplate parses settings.template. The template sees the event as
// its structured JSON: a map with the CloudEvents attributes (id, type,
// source, time, subject, …), each extension (traceparent, …) and data,
// numbers exact. Functions: json (a value as JSON: strings quoted and
// escaped, objects whole) besides text/template's own. A key the event
// lacks is an error, not "<no value>"; index reads an optional one as null.
func webhookTemplate(text string) (*template.Template, error) {
	t, err := template.New("template").Option("missingkey=error").Funcs(template.FuncMap{
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
	}).Parse(text)
	if err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "template: "))
	}
	return t, nil
}

// renderTemplate renders ev's body; the result must be one JSON value.
func renderTemplate(t *template.Template, ev *envelope.Envelope) ([]byte, error) {
	raw, err := ev.Marshal()
	if err != nil {
		return nil, fmt.Errorf("encode event: %w", err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var data map[string]any
	if err := dec.Decode(&data); err != nil {
		return nil, fmt.Errorf("decode event: %w", err)
	}
	var b bytes.Buffer
	if err := t.Execute(&b, data); err != nil {
		return nil, errors.New(strings.TrimPrefix(err.Error(), "template: "))
	}
	out := bytes.TrimSpace(b.Bytes())
	if !json.Valid(out) {
		return nil, fmt.Errorf("rendered %q, which is not JSON", clip(out, 80))
	}
	return out, nil
}

func clip(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// standardSignatures signs id.timestamp.body with each key (Standard
// Webhooks v1), space-separated.
func standardSignatures(keys [][]byte, id, ts string, body []byte) string {
	sigs := make([]string, len(keys))
	for i, key := range keys {
		m := hmac.New(sha256.New, key)
		m.Write([]byte(id))
		m.Write([]byte{'.'})
		m.Write([]byte(ts))
		m.Write([]byte{'.'})
		m.Write(body)
		sigs[i] = "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
	}
	return strings.Join(sigs, " ")
}

// ceHeaders are the event's attributes as the CloudEvents HTTP binding's
// binary mode sends them, values percent-encoded where the binding asks
// (space, ", % and anything outside printable ASCII).
func ceHeaders(ev *envelope.Envelope) map[string]string {
	h := map[string]string{
		"ce-specversion": ev.SpecVersion,
		"ce-id":          ev.ID,
		"ce-source":      ev.Source,
		"ce-type":        ev.Type,
	}
	if ev.Time != nil {
		h["ce-time"] = ev.Time.UTC().Format(time.RFC3339Nano)
	}
	for k, v := range map[string]string{"subject": ev.Subject, "dataschema": ev.DataSchema, "destinations": ev.Destinations} {
		if v != "" {
			h["ce-"+k] = v
		}
	}
	for k, v := range ev.Extensions {
		h["ce-"+k] = v
	}
	for k, v := range h {
		h[k] = ceEscape(v)
	}
	return h
}

func ceEscape(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c <= ' ' || c >= 0x7f || c == '"' || c == '%' {
			fmt.Fprintf(&b, "%%%02X", c)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func dataContentType(ev *envelope.Envelope) string {
	if ev.DataContentType != "" {
		return ev.DataContentType
	}
	return "application/json"
}

// jsonAt reads the string (or number) at a JSON pointer (/error/code) or a
// dotted path (error.code) in body.
func jsonAt(body []byte, path string) (string, bool) {
	if path == "" {
		return "", false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return "", false
	}
	var parts []string
	if p, ok := strings.CutPrefix(path, "/"); ok {
		for _, t := range strings.Split(p, "/") {
			parts = append(parts, strings.ReplaceAll(strings.ReplaceAll(t, "~1", "/"), "~0", "~"))
		}
	} else {
		parts = strings.Split(path, ".")
	}
	for _, p := range parts {
		switch x := v.(type) {
		case map[string]any:
			v = x[p]
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(x) {
				return "", false
			}
			v = x[i]
		default:
			return "", false
		}
	}
	switch x := v.(type) {
	case string:
		return x, x != ""
	case json.Number:
		return x.String(), true
	}
	return "", false
}

// table turns the status lists into a classifier. An exact status in a
// list wins over a class; a status (or class) in two lists is an error, as
// is anything that is not 100–599 or 1xx–5xx.
func (st webhookStatuses) table(at string) (func(int) class, error) {
	exact := map[int]class{}
	classes := map[int]class{}
	var errs []error
	for _, l := range []struct {
		key   string
		vals  []string
		class class
	}{{"success", st.Success, classDelivered}, {"dead_letter", st.DeadLetter, classPermanent}, {"retry", st.Retry, classRetry}} {
		for i, v := range l.vals {
			key := fmt.Sprintf("%s.%s[%d]", at, l.key, i)
			if len(v) == 3 && strings.HasSuffix(strings.ToLower(v), "xx") && v[0] >= '1' && v[0] <= '5' {
				c := int(v[0] - '0')
				if _, dup := classes[c]; dup {
					errs = append(errs, fmt.Errorf("%s: %s is in two lists", key, v))
				}
				classes[c] = l.class
				continue
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 100 || n > 599 {
				errs = append(errs, fmt.Errorf("%s: %q is not a status (100 to 599) or a class (4xx)", key, v))
				continue
			}
			if _, dup := exact[n]; dup {
				errs = append(errs, fmt.Errorf("%s: %d is in two lists", key, n))
			}
			exact[n] = l.class
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return func(status int) class {
		if c, ok := exact[status]; ok {
			return c
		}
		if c, ok := classes[status/100]; ok {
			return c
		}
		return classPermanent
	}, nil
}
