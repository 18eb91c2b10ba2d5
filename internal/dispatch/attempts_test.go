package dispatch_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// scripted is a webhook receiver that answers each request with the next
// of its answers, then 200.
type scripted struct {
	mu      sync.Mutex
	answers []answer
	n       int
}

type answer struct {
	status int
	code   string
}

func (s *scripted) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	a := answer{status: http.StatusOK}
	if s.n < len(s.answers) {
		a = s.answers[s.n]
	}
	s.n++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	fmt.Fprintf(w, `{"error":{"code":%q,"message":"answer %d"}}`, a.code, a.status)
}

func (s *scripted) then(a ...answer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answers = append(s.answers, a...)
}

func (s *scripted) requests() int { s.mu.Lock(); defer s.mu.Unlock(); return s.n }

type logged struct {
	replay, status int
	code           string
}

func attemptRows(r *dlq.Record) []logged {
	var out []logged
	for _, a := range r.Log.Attempts {
		out = append(out, logged{a.Replay, a.Status, a.Code})
	}
	return out
}

// A dead letter lists every attempt in order, each with its status and
// vendor code, whichever way the sink delivers: alone (carried across the
// scheduled retries), in batches (each item logged), or in order (retried
// in place). A replay that fails again continues the log, each entry
// naming its replay.
func TestDeadLetterListsEveryAttempt(t *testing.T) {
	t.Parallel() // waits on retries' backoffs; counts attempts, not time
	for _, c := range []struct {
		name  string
		setup func(config.Sink) config.Sink
	}{
		{"alone", func(s config.Sink) config.Sink { return s }},
		{"batched", func(s config.Sink) config.Sink { return batched(s, 10, 20*time.Millisecond) }},
		{"ordered", func(s config.Sink) config.Sink { s.Order = &config.Order{Key: config.OrderByUser}; return s }},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // independent cases, each its own server
			e := testenv.New(t)
			vendor := &scripted{answers: []answer{{503, "UNAVAILABLE"}, {503, "MAINTENANCE"}, {400, "BAD_FIELD"}}}
			srv := httptest.NewServer(vendor)
			t.Cleanup(srv.Close)
			sink := e.Sink("hook", emulator.Webhook, nil, map[string]any{"code": "error.code"})
			sink.BaseURL = srv.URL
			sink.Breaker.FailureThreshold = 1000 // keep the breaker out of it
			e.Start([]config.Sink{c.setup(sink)}, []config.Route{{Sinks: []string{"hook"}}})
			env := testenv.Track(t, "order_paid", "user-1")
			e.Publish(env)

			var recs []*dlq.Record
			testenv.Eventually(t, 10*time.Second, "dead letter", func() bool {
				recs = deadLetters(t, e, dlq.Filter{})
				return len(recs) == 1
			})
			r := recs[0]
			want := []logged{{0, 503, "UNAVAILABLE"}, {0, 503, "MAINTENANCE"}, {0, 400, "BAD_FIELD"}}
			if got := attemptRows(r); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("attempt log %v, want %v", got, want)
			}
			if r.Log.Total != 3 || r.Attempts != 3 || r.Status != 400 || r.Code != "BAD_FIELD" || r.EventID != env.ID {
				t.Errorf("record %+v", r)
			}
			for i, a := range r.Log.Attempts {
				if a.At.IsZero() || a.Error == "" || i > 0 && a.At.Before(r.Log.Attempts[i-1].At) {
					t.Errorf("attempt %d: %+v", i+1, a)
				}
			}

			// The replay starts a fresh count, fails again, and the log goes on.
			vendor.then(answer{422, "STILL_BAD"})
			if _, err := dlq.NewStore(e.JS, e.Topo).Replay(context.Background(), dlq.Filter{}, dlq.ReplayOptions{}); err != nil {
				t.Fatal(err)
			}
			testenv.Eventually(t, 10*time.Second, "dead letter of the replay", func() bool {
				recs = deadLetters(t, e, dlq.Filter{})
				return len(recs) == 1 && recs[0].Replays == 1
			})
			r = recs[0]
			want = append(want, logged{1, 422, "STILL_BAD"})
			if got := attemptRows(r); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("attempt log after a replay %v, want %v", got, want)
			}
			if r.Log.Total != 4 || r.Attempts != 1 {
				t.Errorf("after a replay: %d attempts this run, %d in all; want 1 and 4", r.Attempts, r.Log.Total)
			}
			if n := vendor.requests(); n != 4 {
				t.Errorf("%d requests, want 4", n)
			}
		})
	}
}

// The log keeps the last dlq.MaxLoggedAttempts attempts and the total,
// however many retries an event takes.
func TestAttemptLogIsBounded(t *testing.T) {
	t.Parallel() // waits on retries' backoffs; counts attempts, not time
	e := testenv.New(t)
	const failures = dlq.MaxLoggedAttempts + 2
	vendor := &scripted{}
	for i := range failures {
		vendor.then(answer{500, fmt.Sprintf("FAIL_%d", i+1)})
	}
	srv := httptest.NewServer(vendor)
	t.Cleanup(srv.Close)
	sink := e.Sink("hook", emulator.Webhook, nil, map[string]any{"code": "error.code"})
	sink.BaseURL = srv.URL
	sink.Breaker.FailureThreshold = 1000
	sink.Retry.MaxAttempts = failures
	sink.Retry.MaxInterval = 50 * time.Millisecond
	e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"hook"}}})
	e.Publish(testenv.Track(t, "order_paid", "user-1"))

	var recs []*dlq.Record
	testenv.Eventually(t, 20*time.Second, "retries exhausted", func() bool {
		recs = deadLetters(t, e, dlq.Filter{})
		return len(recs) == 1
	})
	r := recs[0]
	if r.Log.Total != failures || r.Attempts != failures || len(r.Log.Attempts) != dlq.MaxLoggedAttempts {
		t.Fatalf("total %d, attempts %d, %d logged; want %d, %d, %d",
			r.Log.Total, r.Attempts, len(r.Log.Attempts), failures, failures, dlq.MaxLoggedAttempts)
	}
	// The oldest are the ones dropped.
	if first, last := r.Log.Attempts[0].Code, r.Log.Attempts[len(r.Log.Attempts)-1].Code; first != "FAIL_3" || last != fmt.Sprintf("FAIL_%d", failures) {
		t.Errorf("logged %s … %s, want FAIL_3 … FAIL_%d", first, last, failures)
	}
}
