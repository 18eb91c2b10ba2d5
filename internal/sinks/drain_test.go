package sinks

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// A 2xx whose body trickles is delivered as soon as the status is in: the
// drain that lets the connection be reused waits at most maxDrainWait, not
// the sink's whole timeout (found by the fault suite's pathology matrix:
// each such delivery held a worker for the full timeout, 1 s there, and the
// prefetched events behind them outlived ack_wait and were delivered twice).
func TestTricklingSuccessBodyDoesNotHoldTheDelivery(t *testing.T) {
	for _, status := range []int{http.StatusOK, http.StatusServiceUnavailable} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "1048576")
			w.WriteHeader(status)
			rc := http.NewResponseController(w)
			for r.Context().Err() == nil {
				if _, err := w.Write([]byte(" ")); err != nil || rc.Flush() != nil {
					return
				}
				select {
				case <-time.After(50 * time.Millisecond):
				case <-r.Context().Done():
				}
			}
		}))
		var node yaml.Node
		_ = node.Encode(map[string]any{"app_id": "a", "access_token": "t"})
		chabok, _ := Lookup(emulator.Chabok)
		const timeout = 3 * time.Second
		s, err := chabok.New(config.Sink{Name: "c", BaseURL: srv.URL, Concurrency: 1, Timeout: timeout, Settings: node}, "s")
		if err != nil {
			t.Fatal(err)
		}
		d := event(t, envelope.TypeTrack, envelope.Track{Name: "x", User: user})
		start := time.Now()
		err = s.Deliver(context.Background(), d)
		took := time.Since(start)
		srv.Close()
		if (err == nil) != (status == http.StatusOK) {
			t.Errorf("%d: Deliver = %v", status, err)
		}
		// An error body is read for its code up to maxResponseBytes, within
		// the timeout; a 2xx body is not needed at all.
		if status == http.StatusOK && took > maxDrainWait+time.Second {
			t.Errorf("a 2xx with a trickling body took %s to deliver (timeout %s); want about %s", took.Round(time.Millisecond), timeout, maxDrainWait)
		}
		t.Logf("%d: %s, %v", status, took.Round(time.Millisecond), err)
	}
}

// readSizes is a body that records how large a buffer each Read is given.
type readSizes struct {
	left  int
	sizes []int
}

func (r *readSizes) Read(p []byte) (int, error) {
	r.sizes = append(r.sizes, len(p))
	if r.left == 0 {
		return 0, io.EOF
	}
	n := min(len(p), r.left)
	r.left -= n
	return n, nil
}

// The drain after every answer reads in small pieces: io.Copy into
// io.Discard took an 8 KiB buffer from io's pool for each drain in
// progress, and at 256 workers those buffers were 1.7 MiB of a 7.5 MiB
// live heap (issue 20, the slow-vendor scenario's heap profile).
func TestDrainReadsInSmallPieces(t *testing.T) {
	for _, size := range []int{0, 40, 3000, maxDrainBytes + 5000} {
		body := &readSizes{left: size}
		drain(body, new(sync.Pool))
		if largest := slices.Max(body.sizes); largest > drainChunk {
			t.Errorf("a body of %d bytes was drained with reads of up to %d bytes; want at most %d", size, largest, drainChunk)
		}
		if want := max(size-maxDrainBytes, 0); body.left != want {
			t.Errorf("a body of %d bytes: %d left undrained; want %d (the drain reads up to maxDrainBytes)", size, body.left, want)
		}
	}
}
