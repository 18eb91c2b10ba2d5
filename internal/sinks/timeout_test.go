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

	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// The sink's timeout bounds a vendor request whole (connecting, the
// answer's headers and reading an error body), a timeout is a transient
// failure that says so, and the caller's context ending first is the
// context's error, not the vendor's failure. Pinned when the timeout
// moved from http.Client.Timeout to the request's context deadline.

const pinTimeout = 300 * time.Millisecond

// hanging answers after the sink's timeout; trickling answers status at
// once and then its body a byte at a time, for far longer than the
// timeout.
func hanging(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body) // so the server sees the client go
	select {
	case <-time.After(time.Minute):
	case <-r.Context().Done():
	}
}

func trickling(status int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1048576")
		w.WriteHeader(status)
		rc := http.NewResponseController(w)
		for r.Context().Err() == nil {
			if _, err := w.Write([]byte(" ")); err != nil || rc.Flush() != nil {
				return
			}
			select {
			case <-time.After(20 * time.Millisecond):
			case <-r.Context().Done():
			}
		}
	}
}

func chabokAt(t *testing.T, url string, timeout time.Duration) Sink {
	t.Helper()
	var node yaml.Node
	_ = node.Encode(map[string]any{"app_id": "a", "access_token": "t"})
	chabok, _ := Lookup(emulator.Chabok)
	s, err := chabok.New(config.Sink{Name: "c", BaseURL: url, Concurrency: 1, Timeout: timeout, Settings: node}, "s")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSinkTimeoutBoundsTheWholeRequest(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		// says is what the error must say: the request timed out, or
		// the vendor's status (its body cut short by the timeout).
		says string
	}{
		{"no answer", hanging, "(Client.Timeout exceeded while awaiting headers)"},
		{"an error body that trickles", trickling(http.StatusServiceUnavailable), "503"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			s := chabokAt(t, srv.URL, pinTimeout)
			start := time.Now()
			err := s.Deliver(context.Background(), event(t, envelope.TypeTrack, envelope.Track{Name: "x", User: user}))
			took := time.Since(start)
			var e *Error
			if !errors.As(err, &e) || !e.Transient {
				t.Fatalf("Deliver = %v, want a transient *Error", err)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("Deliver = %q, want it to say %q", err, tc.says)
			}
			if e.Status == 0 && !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("a timed-out request's error %v is not context.DeadlineExceeded", err)
			}
			if took < pinTimeout || took > pinTimeout+time.Second {
				t.Errorf("took %s with timeout %s", took.Round(time.Millisecond), pinTimeout)
			}
		})
	}
}

func TestCallersContextEndingIsItsError(t *testing.T) {
	in := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case in <- struct{}{}:
		default:
		}
		hanging(w, r)
	}))
	defer srv.Close()
	s := chabokAt(t, srv.URL, time.Minute)
	d := event(t, envelope.TypeTrack, envelope.Track{Name: "x", User: user})

	// Cancelled once the vendor has the request.
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-in:
		case <-time.After(10 * time.Second):
		}
		cancel()
	}()
	if err := s.Deliver(ctx, d); err != context.Canceled {
		t.Errorf("the caller cancelled: Deliver = %v, want context.Canceled itself", err)
	}

	// The caller's deadline before the sink's timeout: the caller's, too.
	ctx, cancel = context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := s.Deliver(ctx, d); err != context.DeadlineExceeded {
		t.Errorf("the caller's deadline passed: Deliver = %v, want context.DeadlineExceeded itself", err)
	}
}
