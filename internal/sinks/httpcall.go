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
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
)

// Version names Chapar in the User-Agent vendors see.
const Version = "0.1.0"

// UserAgent is sent with every vendor request.
const UserAgent = "Chapar/" + Version + " (+https://github.com/chapar-dev/chapar)"

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
			ReadBufferSize:        connBufferBytes,
			WriteBufferSize:       connBufferBytes,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
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
func drain(r io.Reader) {
	buf := make([]byte, drainChunk)
	for left := maxDrainBytes; left > 0; {
		n, err := r.Read(buf[:min(len(buf), left)])
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
func send(ctx context.Context, c *http.Client, req *http.Request, find codeFinder) error {
	return call(ctx, c, req, errorTable{Code: find})
}

// call performs one vendor request and classifies the answer by t. Network
// failures and timeouts are transient; nil is delivered.
func call(ctx context.Context, c *http.Client, req *http.Request, t errorTable) error {
	classify, find := t.Classify, t.Code
	if classify == nil {
		classify = defaultClassify
	}
	if find == nil {
		find = findCode
	}
	// rctx lets the drain below give up on a slow body.
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req = req.WithContext(rctx)
	req.Header.Set("User-Agent", UserAgent)
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &Error{Reason: ReasonRetriesExhausted, Transient: true, Message: "request failed", Err: redactURL(err)}
	}
	defer func() {
		// Drain what remains so the connection goes back to the pool, but
		// only what comes at once: the answer is already known, and a
		// vendor trickling its body must not hold the worker. Cancelling
		// cuts the read and closes the connection instead.
		t := time.AfterFunc(maxDrainWait, cancel)
		drain(resp.Body)
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

// jsonRequest builds a POST with a JSON body.
func jsonRequest(url string, body any) (*http.Request, error) {
	var b []byte
	ok := false
	if a, is := body.(bodyAppender); is {
		b, ok = a.appendJSON(make([]byte, 0, 384)) // a Chabok track item's size
	}
	if !ok {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
	}
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(b))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	return req, nil
}

// HTTP is the shared mechanics for a vendor written outside this package
// (in a test, say) where the helpers above are out of reach: the sink's
// client and Chapar's default error table.
type HTTP struct {
	client *http.Client
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
