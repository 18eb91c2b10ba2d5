package sinks

// How Chapar calls a vendor over HTTP, for every vendor: the client and its
// timeouts and keep-alive pool, the response size limit, the classification
// of answers (the error table), Retry-After, and finding the vendor's error
// code in a response body. A vendor file only builds requests.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
)

// Version names Chapar in the User-Agent vendors see.
const Version = "0.1.0"

// UserAgent is sent with every vendor request.
const UserAgent = "Chapar/" + Version + " (+https://github.com/chapar-dev/chapar)"

// httpClient is a sink's client and the sink's timeout, which bounds each
// request whole: connecting, the answer and reading its body.
type httpClient struct {
	*http.Client
	// timeout is applied by call as the request's context deadline, not
	// as http.Client.Timeout: that one adds a second context, a timer and
	// a wrapped body to every request (net/http's setRequestCancel) on top
	// of the context call needs anyway to cut a slow drain. Zero is none.
	timeout time.Duration
	// drainBufs are its drains' buffers, reused (drain).
	drainBufs sync.Pool
}

// newHTTPClient is one tuned client per sink instance: a keep-alive pool as
// large as the sink's concurrency, a bound on every phase, and redirects
// returned as responses (a vendor redirect is a config error, not a hop to
// follow with credentials attached).
func newHTTPClient(cfg config.Sink) *httpClient {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &httpClient{timeout: cfg.Timeout, Client: &http.Client{
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
			ReadBufferSize:        connBufferBytes,
			WriteBufferSize:       connBufferBytes,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// connBufferBytes is the read and the write buffer of each connection,
// a quarter of net/http's default: a vendor request and its answer are a
// few hundred bytes, and a sink keeps as many connections as workers (256
// of them held 2 MiB of buffers, a quarter of the dispatcher's live heap,
// issue 20). A longer request or answer is written or read in more than
// one piece; headers of any length are still read whole.
const connBufferBytes = 1024

// codeFinder pulls a vendor error code out of a response body.
type codeFinder func(body []byte) (code, message string)

// Response bodies are read up to maxResponseBytes for the error code and
// message, and drained up to maxDrainBytes more so the connection goes back
// to the keep-alive pool; a larger body closes the connection instead.
const (
	maxResponseBytes = 64 << 10
	maxDrainBytes    = 256 << 10
	// maxDrainWait bounds the drain in time. Before: only the sink's
	// timeout did, so a vendor that trickled its 2xx body held a worker
	// for the whole timeout.
	maxDrainWait = 100 * time.Millisecond
)

// drainChunk is the drain's read size: a vendor's answer is a few
// hundred bytes.
const drainChunk = 512

// drain reads and discards up to maxDrainBytes of r, drainChunk bytes at
// a time. Not io.Copy into io.Discard: that takes an 8 KiB buffer from
// io's pool for every drain in progress, and a sink's 256 workers held
// 1.7 MiB of them, a quarter of the dispatcher's live heap (issue 20).
//
// The buffer comes from bufs (one per drain in progress, reused: one made
// per answer was an allocation per request).
func drain(r io.Reader, bufs *sync.Pool) {
	bp, _ := bufs.Get().(*[drainChunk]byte)
	if bp == nil {
		bp = new([drainChunk]byte)
	}
	defer bufs.Put(bp)
	for left := maxDrainBytes; left > 0; {
		n, err := r.Read(bp[:min(drainChunk, left)])
		left -= n
		if err != nil {
			return
		}
	}
}

// class is what an answer means for the delivery.
type class int

const (
	classDelivered class = iota
	classRetry
	classPermanent
)

// errorTable is a vendor's table of answers: which statuses deliver, which
// retry, which dead-letter, and where its error code is in a body. The zero
// table is Chapar's default for every vendor: 2xx delivered; 408, 429 and
// 5xx retried (with Retry-After honoured); every other status dead-lettered
// with the status and the code findCode digs out.
type errorTable struct {
	// Classify says what a status means; nil is defaultClassify.
	Classify func(status int) class
	// Code finds the vendor's code and message in an error body; nil is
	// findCode.
	Code codeFinder
}

func defaultClassify(status int) class {
	switch {
	case status >= 200 && status < 300:
		return classDelivered
	case status == http.StatusRequestTimeout, status == http.StatusTooManyRequests, status >= 500:
		return classRetry
	default:
		return classPermanent
	}
}

// send performs one vendor request under the default table, with find for
// the vendor's code.
func send(ctx context.Context, c *httpClient, req *http.Request, find codeFinder) error {
	return call(ctx, c, req, errorTable{Code: find})
}

// call performs one vendor request and classifies the answer by t. Network
// failures and timeouts are transient; nil is delivered; ctx ending first
// is ctx.Err(), not a vendor's failure.
func call(ctx context.Context, c *httpClient, req *http.Request, t errorTable) error {
	classify, find := t.Classify, t.Code
	if classify == nil {
		classify = defaultClassify
	}
	if find == nil {
		find = findCode
	}
	// rctx bounds the whole request by the sink's timeout, the body's
	// reading included, and lets the drain below give up on a slow body.
	var (
		rctx     context.Context
		cancel   context.CancelFunc
		deadline time.Time
	)
	if c.timeout > 0 {
		deadline = time.Now().Add(c.timeout)
		rctx, cancel = context.WithDeadline(ctx, deadline)
	} else {
		rctx, cancel = context.WithCancel(ctx)
	}
	defer cancel()
	req = req.WithContext(rctx)
	if req.Header.Get("User-Agent") != UserAgent {
		req.Header.Set("User-Agent", UserAgent)
	}
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		err = redactURL(err)
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			err = timedOut(err)
		}
		return &Error{Reason: ReasonRetriesExhausted, Transient: true, Message: "request failed", Err: err}
	}
	defer func() {
		// Drain what remains so the connection goes back to the pool, but
		// only what comes at once: the answer is already known, and a
		// vendor trickling its body must not hold the worker. Cancelling
		// cuts the read and closes the connection instead.
		t := time.AfterFunc(maxDrainWait, cancel)
		drain(resp.Body, &c.drainBufs)
		t.Stop()
		_ = resp.Body.Close()
	}()
	cl := classify(resp.StatusCode)
	if cl == classDelivered {
		return nil
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	code, msg := find(body)
	e := &Error{Reason: ReasonVendorRejected, Status: resp.StatusCode, Code: code, Message: msg}
	switch {
	case cl == classRetry:
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

// timedOut is err of a request the sink's timeout ended, worded as
// net/http words one its Client.Timeout ended (which the timeout was
// before it became the request's deadline), so a dead letter or a log
// line says the same as before.
func timedOut(err error) error {
	return &timeoutError{err.Error() + " (Client.Timeout exceeded while awaiting headers)"}
}

// timeoutError is net/http's error of that name: a timeout, and
// context.DeadlineExceeded to errors.Is.
type timeoutError struct{ err string }

func (e *timeoutError) Error() string   { return e.err }
func (e *timeoutError) Timeout() bool   { return true }
func (e *timeoutError) Temporary() bool { return true }
func (e *timeoutError) Is(err error) bool {
	return err == context.DeadlineExceeded
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
	// Seconds past what a Duration holds are a vendor asking for a very
	// long wait (max_retry_after clamps it): saturate, never overflow
	// (1e10 s read as none, 18446744074 s as 290 ms).
	if s, err := strconv.ParseInt(v, 10, 64); err == nil || errors.Is(err, strconv.ErrRange) {
		switch {
		case s <= 0:
			return 0
		case s > int64(math.MaxInt64/time.Second):
			return math.MaxInt64
		}
		return time.Duration(s) * time.Second
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
	// kind is an HTTP status's name (FORBIDDEN) found where a code may
	// be: reported only when the body has no code of its own. Metrix
	// documents its errors as such a pair ("FORBIDDEN: 403" with
	// S2S_FEATURE_NOT_AVAILABLE or INVALID_PARAMETERS), and the kind
	// alone cannot tell its two 403s apart.
	var kind string
	var walk func(v any, depth int)
	walk = func(v any, depth int) {
		if depth > 6 || (code != "" && message != "") {
			return
		}
		switch x := v.(type) {
		case map[string]any:
			for _, k := range []string{"code", "error_code", "errorCode", "error", "status", "reason", "type", "errorType", "error_type", "name"} {
				if s, ok := x[k].(string); ok && code == "" && looksLikeCode(s) {
					if httpKind(s) {
						if kind == "" {
							kind = s
						}
						continue
					}
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
	if code == "" {
		code = kind
	}
	if code == "" && looksLikeCode(message) {
		code = message // {"message": "S2S_FEATURE_NOT_AVAILABLE", "error": "Forbidden"}
	}
	return code, message
}

// httpKind says s is an HTTP status's name, which a body may carry beside
// its own code.
func httpKind(s string) bool {
	switch s {
	case "BAD_REQUEST", "UNAUTHORIZED", "FORBIDDEN", "NOT_FOUND", "METHOD_NOT_ALLOWED", "NOT_ACCEPTABLE",
		"REQUEST_TIMEOUT", "CONFLICT", "GONE", "PAYLOAD_TOO_LARGE", "UNSUPPORTED_MEDIA_TYPE", "UNPROCESSABLE_ENTITY",
		"TOO_MANY_REQUESTS", "INTERNAL_SERVER_ERROR", "BAD_GATEWAY", "SERVICE_UNAVAILABLE", "GATEWAY_TIMEOUT":
		return true
	}
	return false
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

// jsonRequest builds a POST with a JSON body.
func jsonRequest(url string, body any) (*http.Request, error) {
	b, err := encodeJSON(body)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// encodeJSON is a request's body: appended by the body itself when it can
// (bodyAppender), json.Marshal otherwise.
func encodeJSON(body any) ([]byte, error) {
	if a, is := body.(bodyAppender); is {
		if b, ok := a.appendJSON(make([]byte, 0, 384)); ok { // a Chabok track item's size
			return b, nil
		}
	}
	b, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	return b, nil
}

// endpoint is a URL a sink posts JSON to, parsed once, and the headers
// every request to it carries, built once: the request jsonRequest and
// the sink's Header.Set calls would build, without parsing the URL and
// filling a header map per request (a copy of the built one instead).
type endpoint struct {
	url *url.URL
	// err is the URL's parse error, returned by every request as
	// jsonRequest returns it.
	err    error
	header http.Header
}

// newEndpoint parses rawURL and builds the headers: jsonRequest's, the
// User-Agent call sets, and the sink's (key, value pairs).
func newEndpoint(rawURL string, header ...string) *endpoint {
	h := http.Header{}
	h.Set("Content-Type", "application/json")
	h.Set("Accept", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		h.Set(header[i], header[i+1])
	}
	h.Set("User-Agent", UserAgent) // last, as call sets it
	u, err := url.Parse(rawURL)
	if err == nil {
		u.Host = removeEmptyPort(u.Host) // as http.NewRequest does
	}
	return &endpoint{url: u, err: err, header: h}
}

// post is a POST of body as JSON to the endpoint, as http.NewRequest
// builds one of a *bytes.Reader. Its Host is left empty: the transport
// takes the URL's (net/http's client would copy the URL for a set one).
func (e *endpoint) post(body any) (*http.Request, error) {
	b, err := encodeJSON(body)
	if err != nil {
		return nil, err
	}
	if e.err != nil {
		return nil, fmt.Errorf("build request: %w", e.err)
	}
	u := *e.url // the request's own: a URL is not read-only by contract
	r := bytes.NewReader(b)
	req := &http.Request{
		Method:        http.MethodPost,
		URL:           &u,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        e.header.Clone(),
		Body:          io.NopCloser(r),
		ContentLength: int64(len(b)),
		GetBody: func() (io.ReadCloser, error) {
			r := bytes.NewReader(b)
			return io.NopCloser(r), nil
		},
	}
	if len(b) == 0 { // never (JSON is at least null), but as NewRequest has it
		req.Body = http.NoBody
		req.GetBody = func() (io.ReadCloser, error) { return http.NoBody, nil }
	}
	return req, nil
}

// removeEmptyPort strips an empty port (":" at the end) from a host, as
// net/http does.
func removeEmptyPort(host string) string {
	if strings.LastIndex(host, ":") > strings.LastIndex(host, "]") {
		return strings.TrimSuffix(host, ":")
	}
	return host
}

// HTTP is the shared mechanics for a vendor written outside this package
// (in a test, say) where the helpers above are out of reach: the sink's
// client and Chapar's default error table.
type HTTP struct {
	client *httpClient
	table  errorTable
}

// NewHTTP gives a sink its client (pool and timeouts from cfg) and the
// default error table; code finds the vendor's code and message in an error
// body (nil: searched for anywhere, as for every vendor).
func NewHTTP(cfg config.Sink, code func(body []byte) (code, message string)) *HTTP {
	return &HTTP{client: newHTTPClient(cfg), table: errorTable{Code: code}}
}

// Do sends req and classifies the answer: nil once delivered, else an
// *Error saying whether to retry.
func (h *HTTP) Do(ctx context.Context, req *http.Request) error {
	return call(ctx, h.client, req, h.table)
}

// JSONRequest is a POST of body as JSON.
func JSONRequest(url string, body any) (*http.Request, error) { return jsonRequest(url, body) }
