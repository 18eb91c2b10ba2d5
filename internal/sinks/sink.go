// Package sinks delivers events to vendors. Each vendor lives in one file
// with its URL and auth, its mapping from the envelope, and its table of
// responses; this file holds what they share.
package sinks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Version names Chapar in the User-Agent vendors see.
const Version = "0.1.0"

// UserAgent is sent with every vendor request.
const UserAgent = "Chapar/" + Version + " (+https://github.com/chapar-dev/chapar)"

// Delivery is one event on its way to one sink.
type Delivery struct {
	Event *envelope.Event
	// ReceivedAt is when Chapar accepted the event: the event's time when
	// the producer gave none.
	ReceivedAt time.Time
}

// Sink delivers to one vendor instance. Deliver returns nil once the vendor
// answered 2xx, or an *Error saying whether to retry.
type Sink interface {
	Name() string
	Deliver(ctx context.Context, d *Delivery) error
}

// Reasons a delivery fails with; internal/outcome owns them.
const (
	ReasonInvalidEnvelope  = outcome.InvalidEnvelope
	ReasonUnmappedEvent    = outcome.UnmappedEvent
	ReasonUnsupportedEvent = outcome.UnsupportedEvent
	ReasonInvalidForVendor = outcome.InvalidForVendor
	ReasonVendorRejected   = outcome.VendorRejected
	ReasonRetriesExhausted = outcome.RetriesExhausted
)

// Error is a failed delivery, classified.
type Error struct {
	Reason     outcome.Reason
	Transient  bool
	Status     int    // HTTP status, 0 before any response
	Code       string // the vendor's own error code, when it gave one
	Message    string
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(string(e.Reason))
	if e.Status != 0 {
		fmt.Fprintf(&b, ": HTTP %d", e.Status)
	}
	if e.Code != "" {
		fmt.Fprintf(&b, " %s", e.Code)
	}
	if e.Message != "" {
		fmt.Fprintf(&b, ": %s", e.Message)
	}
	if e.Err != nil {
		fmt.Fprintf(&b, ": %v", e.Err)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.Err }

// Temporary reports whether a retry may succeed; internal/retry reads it.
func (e *Error) Temporary() bool { return e.Transient }

// reject is a permanent failure found before any request was made.
func reject(reason outcome.Reason, format string, args ...any) *Error {
	return &Error{Reason: reason, Message: fmt.Sprintf(format, args...)}
}

// Factory builds a sink from its config. It validates the vendor settings
// and returns errors naming their keys under at.
type Factory func(cfg config.Sink, at string) (Sink, error)

// Vendors maps each vendor key of the config to its sink.
func Vendors() map[string]Factory {
	return map[string]Factory{
		"chabok":         newChabok,
		"metrix-s2s":     newMetrixS2S,
		"metrix-gateway": newMetrixGateway,
		"kenar":          newKenar,
	}
}

// Build creates every configured sink, or says what is wrong with each.
func Build(cfgs []config.Sink) (map[string]Sink, error) {
	vendors := Vendors()
	out := make(map[string]Sink, len(cfgs))
	var errs []error
	for i, c := range cfgs {
		f, ok := vendors[c.Vendor]
		if !ok {
			errs = append(errs, fmt.Errorf("sinks[%d].vendor: %q is not a vendor; use chabok, metrix-s2s, metrix-gateway or kenar", i, c.Vendor))
			continue
		}
		s, err := f(c, config.SettingsKey(i))
		if err == nil {
			err = checkBatch(i, c, s)
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[c.Name] = s
	}
	return out, errors.Join(errs...)
}

// decodeSettings decodes a vendor's settings strictly, so a misspelt key
// fails at start instead of silently sending without a credential.
func decodeSettings(n yaml.Node, at string, into any) error {
	if n.Kind == 0 {
		return nil
	}
	var buf bytes.Buffer
	if err := yaml.NewEncoder(&buf).Encode(&n); err != nil {
		return fmt.Errorf("%s: %w", at, err)
	}
	dec := yaml.NewDecoder(&buf)
	dec.KnownFields(true)
	if err := dec.Decode(into); err != nil {
		return fmt.Errorf("%s: %w", at, err)
	}
	return nil
}

// required names each empty setting.
func required(at string, kv ...string) error {
	var errs []error
	for i := 0; i+1 < len(kv); i += 2 {
		if strings.TrimSpace(kv[i+1]) == "" {
			errs = append(errs, fmt.Errorf("%s.%s: is required", at, kv[i]))
		}
	}
	return errors.Join(errs...)
}

// newHTTPClient is one tuned client per sink instance: a keep-alive pool as
// large as the sink's concurrency, a bound on every phase, and redirects
// returned as responses (a vendor redirect is a config error, not a hop to
// follow with credentials attached).
func newHTTPClient(cfg config.Sink) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &http.Client{
		Timeout: cfg.Timeout,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           dialer.DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          cfg.Concurrency,
			MaxIdleConnsPerHost:   cfg.Concurrency,
			MaxConnsPerHost:       cfg.Concurrency,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   5 * time.Second,
			ResponseHeaderTimeout: cfg.Timeout,
			ExpectContinueTimeout: time.Second,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// codeFinder pulls a vendor error code out of a response body.
type codeFinder func(body []byte) (code, message string)

// send performs one vendor request and classifies the answer: 2xx is
// delivered; 408, 429 and 5xx are transient; other statuses are permanent;
// network failures and timeouts are transient.
func send(ctx context.Context, c *http.Client, req *http.Request, find codeFinder) error {
	req = req.WithContext(ctx)
	req.Header.Set("User-Agent", UserAgent)
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &Error{Reason: ReasonRetriesExhausted, Transient: true, Message: "request failed", Err: redactURL(err)}
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	code, msg := find(body)
	e := &Error{Reason: ReasonVendorRejected, Status: resp.StatusCode, Code: code, Message: msg}
	switch {
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode >= 500:
		e.Transient = true
		e.Reason = ReasonRetriesExhausted
		e.RetryAfter = parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		e.Message = "unexpected redirect to " + resp.Header.Get("Location") + "; check base_url"
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// redactURL drops the URL from a transport error: a vendor URL may carry
// credentials in its query (Kenar's does not, but a proxy's might).
func redactURL(err error) error {
	var ue interface{ Unwrap() error }
	if errors.As(err, &ue) {
		if inner := ue.Unwrap(); inner != nil {
			return inner
		}
	}
	return err
}

// parseRetryAfter reads Retry-After as seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil {
		return max(time.Duration(s)*time.Second, 0)
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return 0
}

// findCode digs a vendor's error code out of a JSON body whatever its shape:
// it looks for the first string under a key named code, error_code,
// errorCode, name or status text, at any depth, and a message beside it.
// A body that is not JSON yields its first line as the message.
func findCode(body []byte) (code, message string) {
	var v any
	if err := json.Unmarshal(body, &v); err != nil {
		line, _, _ := strings.Cut(strings.TrimSpace(string(body)), "\n")
		if len(line) > 200 {
			line = line[:200]
		}
		return "", line
	}
	var walk func(v any, depth int)
	walk = func(v any, depth int) {
		if depth > 6 || (code != "" && message != "") {
			return
		}
		switch x := v.(type) {
		case map[string]any:
			for _, k := range []string{"code", "error_code", "errorCode", "error", "status", "reason", "type", "name"} {
				if s, ok := x[k].(string); ok && code == "" && looksLikeCode(s) {
					code = s
				}
			}
			for _, k := range []string{"message", "error_description", "detail", "description", "msg"} {
				if s, ok := x[k].(string); ok && message == "" {
					message = s
				}
			}
			for _, k := range []string{"error", "errors", "details", "data"} {
				if c, ok := x[k]; ok {
					walk(c, depth+1)
				}
			}
		case []any:
			for _, c := range x {
				walk(c, depth+1)
			}
		}
	}
	walk(v, 0)
	return code, message
}

// looksLikeCode accepts UPPER_SNAKE identifiers such as
// EVENT_TYPE_DOES_NOT_EXIST, not prose or generic names like "Error".
func looksLikeCode(s string) bool {
	if len(s) < 3 || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}

// mapName turns an envelope event name into the vendor's, via the sink's
// events table; with requireMapping unset, unmapped names pass unchanged.
func mapName(events map[string]string, name string, requireMapping bool, sink string) (string, error) {
	if v, ok := events[name]; ok && v != "" {
		return v, nil
	}
	if requireMapping {
		return "", reject(ReasonUnmappedEvent, "event %q has no entry in sink %s's events table; add %q: <vendor name>", name, sink, name)
	}
	return name, nil
}

// jsonRequest builds a POST with a JSON body.
func jsonRequest(url string, body any) (*http.Request, error) {
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// stringify renders a property value as the text a string-only vendor field
// needs: numbers as written, booleans as true/false, arrays as JSON.
func stringify(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}
