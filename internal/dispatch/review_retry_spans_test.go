package dispatch_test

import (
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Review h-retry: every attempt's span is ended, whatever becomes of the
// event: an unended span is never exported (the attempt is missing from
// the producer's trace) and the SDK's processors never see it end.
func TestEveryAttemptSpanIsEnded(t *testing.T) {
	cases := []struct {
		name    string
		fault   *emulator.Fault
		panics  bool
		settled func(t *testing.T, e *testenv.Env, id string) bool
	}{
		{"2xx", nil, false, func(t *testing.T, e *testenv.Env, id string) bool { return allDelivered(t, e, []string{id})() }},
		{"503 then 2xx", &emulator.Fault{Status: 503, Count: 1}, false,
			func(t *testing.T, e *testenv.Env, id string) bool { return allDelivered(t, e, []string{id})() }},
		{"400", &emulator.Fault{Status: 400, Code: "BAD_REQUEST"}, false, func(t *testing.T, e *testenv.Env, id string) bool {
			return len(deadLetters(t, e, dlq.Filter{Reason: outcome.VendorRejected})) == 1
		}},
		{"the sink panics", nil, true, func(t *testing.T, e *testenv.Env, id string) bool {
			return len(deadLetters(t, e, dlq.Filter{Reason: outcome.HandlerPanic})) == 1
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := testenv.New(t)
			rec := tracetest.NewSpanRecorder()
			e.Tracer = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			if c.fault != nil {
				e.Emu.Vendor(emulator.MetrixGateway).SetFault(*c.fault)
			}
			_, m := startMisbehaving(t, e, e.Sink("gateway", emulator.MetrixGateway, slugs, nil))
			env := testenv.Track(t, "order_paid", "u1",
				envelope.WithExtension("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"))
			if c.panics {
				m.mu.Lock()
				m.panic[env.ID] = true
				m.mu.Unlock()
			}
			e.Publish(env)
			testenv.Eventually(t, 10*time.Second, "the event settled", func() bool { return c.settled(t, e, env.ID) })
			deadline := time.Now().Add(3 * time.Second)
			for len(rec.Started()) != len(rec.Ended()) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if s, n := len(rec.Started()), len(rec.Ended()); s == 0 || s != n {
				t.Errorf("%d attempt spans started, %d ended", s, n)
			}
		})
	}
}
