package dispatch_test

// Dead letters are once per (event, sink, replay), whatever
// duplicate_window is (issue 18).

import (
	"context"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// shortWindow gives e's streams a duplicate window of one second, so a
// test can outlast it.
func shortWindow(t *testing.T, e *testenv.Env) time.Duration {
	t.Helper()
	e.Streams.DuplicateWindow = time.Second
	e.Topo = topology.New(e.Streams)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Topo.Ensure(ctx, e.JS); err != nil {
		t.Fatal(err)
	}
	return e.Streams.DuplicateWindow
}

// Every sink's consumer sees an invalid envelope and an event naming a sink
// no dispatcher runs. A sink that checks them longer than duplicate_window
// after the first must find their dead letters written, not write a second
// of each (which a replay would deliver twice).
func TestLaggingSinkWritesNoSecondDeadLetter(t *testing.T) {
	t.Parallel() // waits out duplicate_window; a loaded machine only waits longer
	e := testenv.New(t)
	window := shortWindow(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// The lagging sink exists (its consumer holds the events) but nothing
	// runs it yet.
	if _, err := e.Topo.EnsureSink(ctx, e.JS, "late", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 1000}); err != nil {
		t.Fatal(err)
	}
	chabok := e.Sink("chabok", emulator.Chabok, nil, nil)
	first := e.Start([]config.Sink{chabok}, []config.Route{{Sinks: []string{"chabok"}}})
	e.PublishRaw(e.Topo.EventSubject(envelope.TypeTrack), "bad-1", []byte("not an envelope"))
	ghost := testenv.Track(t, "order_paid", "u1", envelope.WithDestinations("ghost"))
	e.Publish(ghost)
	counts := func() (invalid, unknown int) {
		return len(deadLetters(t, e, dlq.Filter{Reason: outcome.InvalidEnvelope})),
			len(deadLetters(t, e, dlq.Filter{Reason: outcome.UnknownDestination, Sink: "ghost"}))
	}
	testenv.Eventually(t, 10*time.Second, "both dead letters written by the first sink", func() bool {
		i, u := counts()
		return i == 1 && u == 1
	})
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	// What is tested is a write after the window, so the window must pass.
	time.Sleep(window + 500*time.Millisecond)
	late := e.Sink("late", emulator.Chabok, nil, nil)
	e.Start([]config.Sink{chabok, late}, []config.Route{{Sinks: []string{"chabok"}}})
	testenv.Eventually(t, 10*time.Second, "the lagging sink through both events", func() bool { return consumerIdle(t, e, "late") })
	if i, u := counts(); i != 1 || u != 1 {
		t.Errorf("%d invalid_envelope and %d unknown_destination dead letters, want 1 and 1", i, u)
	}
}
