package sinks

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
)

// A sink's connections keep small buffers: a vendor request and its answer
// are a few hundred bytes, and net/http's default of 4 KiB each way, at
// 256 connections, was 2 MiB of the dispatcher's live heap (issue 20). What
// does not fit is read and written in more than one piece, nothing lost:
// a request of 20 KiB, an answer with 8 KiB of headers and a 200 KiB body,
// an error answer with its code past the first kilobyte.
func TestVendorConnectionsKeepSmallBuffers(t *testing.T) {
	tr := newHTTPClient(config.Sink{Concurrency: 256, Timeout: time.Second}).Transport.(*http.Transport)
	if tr.ReadBufferSize != connBufferBytes || tr.WriteBufferSize != connBufferBytes || connBufferBytes > 1024 {
		t.Fatalf("read and write buffers per connection = %d, %d; want %d (at most 1 KiB)", tr.ReadBufferSize, tr.WriteBufferSize, connBufferBytes)
	}

	bigHeader, bigBody := strings.Repeat("h", 8<<10), strings.Repeat("b", 200<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Big", bigHeader)
		switch {
		case len(body) != 20<<10:
			http.Error(w, "short request body", http.StatusTeapot)
		case r.URL.Path == "/ok":
			_, _ = io.WriteString(w, bigBody)
		default:
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"pad":"`+strings.Repeat("p", 2<<10)+`","code":"EVENT_TYPE_DOES_NOT_EXIST"}`)
		}
	}))
	defer srv.Close()
	h := NewHTTP(config.Sink{Concurrency: 2, Timeout: 5 * time.Second}, nil)
	payload := map[string]string{"data": strings.Repeat("d", 20<<10-11)} // 20 KiB of JSON
	// Three times over one connection: each answer was read whole.
	for range 3 {
		req, err := JSONRequest(srv.URL+"/ok", payload)
		if err != nil {
			t.Fatal(err)
		}
		if err := h.Do(context.Background(), req); err != nil {
			t.Fatalf("a large request and answer: %v; want delivered", err)
		}
		req, _ = JSONRequest(srv.URL+"/rejected", payload)
		var e *Error
		if err := h.Do(context.Background(), req); !errors.As(err, &e) || e.Status != http.StatusBadRequest || e.Code != "EVENT_TYPE_DOES_NOT_EXIST" {
			t.Fatalf("a rejection with its code past the first kilobyte: %v; want 400 EVENT_TYPE_DOES_NOT_EXIST", err)
		}
	}
}
