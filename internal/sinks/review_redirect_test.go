package sinks

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/chapar-dev/chapar/internal/config"
)

// Review h-retry: a vendor's redirect is never followed (the request
// carries credentials), whatever the status, and is a permanent failure
// naming the target, not a transient one that would retry or trip the
// breaker.
func TestRedirectIsNotFollowedWithCredentials(t *testing.T) {
	var reached atomic.Int32
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached.Add(1)
	}))
	defer other.Close()
	for _, status := range []int{301, 302, 303, 307, 308} {
		vendor := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, other.URL+"/steal", status)
		}))
		h := NewHTTP(config.Sink{Concurrency: 1, Timeout: 2e9}, nil)
		req, _ := JSONRequest(vendor.URL+"/track", map[string]string{"a": "b"})
		req.Header.Set("Authorization", "Bearer secret")
		err := h.Do(context.Background(), req)
		vendor.Close()
		var se *Error
		if !errors.As(err, &se) || se.Transient || se.Status != status || !strings.Contains(se.Message, other.URL) {
			t.Errorf("%d: %v, want a permanent error naming the redirect", status, err)
		}
	}
	if n := reached.Load(); n != 0 {
		t.Errorf("the redirect target got %d requests", n)
	}
}
