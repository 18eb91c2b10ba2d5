package dispatch_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// A sink's events consumer lost while no dispatcher runs (an operator's
// `nats consumer rm` during a full restart, an R1 consumer lost with its
// server during an outage of the dispatchers) was created at the next
// start as a new sink's is: from new events. The sink is not new (its
// retries consumer is there), and the events it had not delivered are
// still in the stream (limits retention), but none reached the vendor and
// none was dead-lettered. Its ack floor is now kept where it survives the
// consumer (<PREFIX>_FLOORS), and the next start recreates it above it.
func TestConsumerLostWhileNoDispatcherRunsKeepsItsBacklog(t *testing.T) {
	t.Parallel() // waits on the healer and the vendor, not on the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	d := e.Start([]config.Sink{sink}, routes)
	first := publishTracks(t, e, 3, "order_paid")
	testenv.Eventually(t, 10*time.Second, "the first events delivered", allDelivered(t, e, first))
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	backlog := publishTracks(t, e, 5, "order_paid") // published while no dispatcher runs
	deleteConsumers(t, e, topology.SinkConsumer("gateway"))
	d = e.Start([]config.Sink{sink}, routes)
	testenv.Eventually(t, 15*time.Second, "the backlog delivered after the restart", allDelivered(t, e, backlog))
	assertDeliveredOnce(t, e, first) // the floor was written as the dispatcher stopped
	if lost, down := d.Tally.ConsumersLost("gateway"); lost != 1 || down != 0 {
		t.Errorf("losses counted %d, not back %d; want 1, 0", lost, down)
	}
}

// The other ways a consumer is found missing at a start: its retries
// consumer lost as well (the floor alone says the sink is not new), part
// of its backlog aged out of the stream meanwhile (said, with the count,
// the rest delivered), no floor recorded (a deployment from before the
// floors) with sinks[].start set by the operator.
func TestConsumerLostWhileDown(t *testing.T) {
	t.Parallel() // waits on the healer and the vendor, not on the CPU
	tests := []struct {
		name string
		// down happens while no dispatcher runs, after the backlog is
		// published.
		down func(t *testing.T, e *testenv.Env)
		// startAtStop sets sinks[].start to when the first dispatcher
		// stopped.
		startAtStop bool
		delivered   func(backlog []string) []string // of the backlog
		wantLog     string
		wantField   zapcore.Field
	}{
		{
			name: "retries consumer lost too",
			down: func(t *testing.T, e *testenv.Env) {
				deleteConsumers(t, e, topology.SinkConsumer("gateway"))
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				if err := e.JS.DeleteConsumer(ctx, e.Topo.RetriesStream(), topology.RetryConsumer("gateway")); err != nil {
					t.Fatal(err)
				}
			},
			delivered: func(b []string) []string { return b },
			wantLog:   "recreated above its recorded ack floor",
			wantField: zap.Uint64("from_stream_sequence", 4),
		},
		{
			name: "backlog partly aged out",
			down: func(t *testing.T, e *testenv.Env) {
				deleteConsumers(t, e, topology.SinkConsumer("gateway"))
				// As max_age would: the two oldest of the backlog (stream
				// sequences 4 and 5) leave the stream.
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				st, err := e.JS.Stream(ctx, e.Topo.EventsStream())
				if err != nil {
					t.Fatal(err)
				}
				if err := st.Purge(ctx, jetstream.WithPurgeSequence(6)); err != nil {
					t.Fatal(err)
				}
			},
			delivered: func(b []string) []string { return b[2:] },
			wantLog:   "they cannot be delivered",
			wantField: zap.Uint64("unrecoverable_at_most", 2),
		},
		{
			name: "no floor recorded, sinks[].start set",
			down: func(t *testing.T, e *testenv.Env) {
				deleteConsumers(t, e, topology.SinkConsumer("gateway"))
				deleteFloors(t, e)
			},
			startAtStop: true,
			delivered:   func(b []string) []string { return b },
			wantLog:     "created from sinks[].start",
			wantField:   zap.Uint64("from_stream_sequence", 4),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := testenv.New(t)
			logs := observeLogs(e)
			sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
			routes := []config.Route{{Sinks: []string{"gateway"}}}
			d := e.Start([]config.Sink{sink}, routes)
			first := publishTracks(t, e, 3, "order_paid")
			testenv.Eventually(t, 10*time.Second, "the first events delivered", allDelivered(t, e, first))
			if err := d.Stop(); err != nil {
				t.Fatal(err)
			}
			stopped := time.Now()
			backlog := publishTracks(t, e, 5, "order_paid")
			tt.down(t, e)
			if tt.startAtStop {
				sink.Start = stopped.UTC().Format(time.RFC3339Nano)
			}
			d = e.Start([]config.Sink{sink}, routes)
			testenv.Eventually(t, 15*time.Second, "the backlog delivered after the restart", allDelivered(t, e, tt.delivered(backlog)))
			assertDeliveredOnce(t, e, first)
			if lost, down := d.Tally.ConsumersLost("gateway"); lost != 1 || down != 0 {
				t.Errorf("losses counted %d, not back %d; want 1, 0", lost, down)
			}
			found := logs.FilterMessageSnippet(tt.wantLog).FilterField(tt.wantField).Len()
			if found != 1 {
				t.Errorf("%d log lines %q with %s=%v; want 1 (all of them: %v)", found, tt.wantLog, tt.wantField.Key, tt.wantField.Integer, messages(logs))
			}
		})
	}
}

// A floor names the stream instance it was read in: an events stream
// deleted and made again under the same name (a change of
// streams.partitions from 2 to 3 keeps the names _0 and _1) starts its
// sequences again, and a floor of the old one would skip the new one's
// first events. The sink is not new, so its consumer on the new stream
// takes everything the stream holds.
func TestFloorOfAnOlderStreamOfTheSameNameIsNotApplied(t *testing.T) {
	t.Parallel() // waits on the healer and the vendor, not on the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	d := e.Start([]config.Sink{sink}, routes)
	first := publishTracks(t, e, 5, "order_paid")
	testenv.Eventually(t, 10*time.Second, "the first events delivered", allDelivered(t, e, first))
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.JS.DeleteStream(ctx, e.Topo.EventsStream()); err != nil {
		t.Fatal(err)
	}
	if err := e.Topo.Ensure(ctx, e.JS); err != nil {
		t.Fatal(err)
	}
	// Sequences 1 to 8 again, past the old floor of 5.
	again := publishTracks(t, e, 8, "order_paid")
	d = e.Start([]config.Sink{sink}, routes)
	testenv.Eventually(t, 15*time.Second, "every event of the new stream delivered", allDelivered(t, e, again))
	if lost, _ := d.Tally.ConsumersLost("gateway"); lost != 0 {
		t.Errorf("%d losses counted for a stream the sink never had a consumer on; want 0", lost)
	}
}

// A sink whose events consumer is missing, whose retries consumer is
// there (it is not new) and whose floor is not recorded (it last ran
// before floors were, or the bucket went with the consumer): where it
// stood is unknown. Starting it from new events would skip its backlog
// silently, from the stream's first event would deliver up to max_age of
// events again; the start is refused, naming the key that says where.
func TestConsumerLostWithNoFloorRecordedRefusesTheStart(t *testing.T) {
	t.Parallel() // waits on the server, not on the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	d := e.Start([]config.Sink{sink}, routes)
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	deleteConsumers(t, e, topology.SinkConsumer("gateway"))
	deleteFloors(t, e)
	_, err := e.TryStart([]config.Sink{sink}, routes)
	if err == nil || !errors.Is(err, topology.ErrFloorUnknown) || !strings.Contains(err.Error(), "set sinks[0].start") {
		t.Fatalf("start: %v; want it refused with topology.ErrFloorUnknown, naming sinks[0].start", err)
	}
}

// dispatcher sinks remove deletes the sink's floors with its consumers:
// added again later, it is a new sink (from new events, no loss), not one
// resuming a floor of long ago.
func TestSinksRemoveDeletesItsFloors(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	routes := []config.Route{{Sinks: []string{"gateway"}}}
	d := e.Start([]config.Sink{sink}, routes)
	delivered := publishTracks(t, e, 2, "order_paid")
	testenv.Eventually(t, 10*time.Second, "the events delivered", allDelivered(t, e, delivered))
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if n := len(floorKeys(t, e)); n != 1 {
		t.Fatalf("%d floors recorded after a run; want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := e.Topo.RemoveSink(ctx, e.JS, "gateway"); err != nil {
		t.Fatal(err)
	}
	if keys := floorKeys(t, e); len(keys) != 0 {
		t.Fatalf("floors left after sinks remove: %v", keys)
	}
	before := publishTracks(t, e, 2, "order_paid") // while the sink does not exist
	d = e.Start([]config.Sink{sink}, routes)
	after := publishTracks(t, e, 2, "order_paid")
	testenv.Eventually(t, 10*time.Second, "the events after it was added again delivered", allDelivered(t, e, after))
	got := gatewayIDs(t, e)
	for _, id := range before {
		if got[id] != 0 {
			t.Errorf("event %s, published while the sink was removed, delivered %d times; want 0 (added again, it is new)", id, got[id])
		}
	}
	if lost, _ := d.Tally.ConsumersLost("gateway"); lost != 0 {
		t.Errorf("%d losses counted for a sink added again; want 0", lost)
	}
}

func deleteConsumers(t *testing.T, e *testenv.Env, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, stream := range e.Topo.EventsStreams() {
		if err := e.JS.DeleteConsumer(ctx, stream, name); err != nil {
			t.Fatal(err)
		}
	}
}

// deleteFloors empties the floors bucket, as a deployment that last ran a
// Chapar without floors has it.
func deleteFloors(t *testing.T, e *testenv.Env) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.JS.DeleteKeyValue(ctx, e.Topo.FloorsBucket()); err != nil {
		t.Fatal(err)
	}
}

func floorKeys(t *testing.T, e *testenv.Env) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := e.JS.KeyValue(ctx, e.Topo.FloorsBucket())
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

func assertDeliveredOnce(t *testing.T, e *testenv.Env, ids []string) {
	t.Helper()
	got := gatewayIDs(t, e)
	for _, id := range ids {
		if got[id] != 1 {
			t.Errorf("event %s delivered %d times; want once", id, got[id])
		}
	}
}

// observeLogs records what the dispatchers started after it log, besides
// the test's own log.
func observeLogs(e *testenv.Env) *observer.ObservedLogs {
	core, logs := observer.New(zap.InfoLevel)
	e.Log = zap.New(zapcore.NewTee(e.Log.Core(), core))
	return logs
}

func messages(logs *observer.ObservedLogs) []string {
	var out []string
	for _, l := range logs.All() {
		out = append(out, l.Message)
	}
	return out
}

// A sink whose consumers are all gone (deleted by hand) still has its
// floors: sinks remove must see them and delete them, or the sink, added
// again later, would resume from a floor of long ago instead of starting
// as a new sink.
func TestSinksRemoveSeesFloorsWithNoConsumersLeft(t *testing.T) {
	t.Parallel() // waits on the server, not on the CPU
	e := testenv.New(t)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	d := e.Start([]config.Sink{sink}, []config.Route{{Sinks: []string{"gateway"}}})
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	deleteConsumers(t, e, topology.SinkConsumer("gateway"))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.JS.DeleteConsumer(ctx, e.Topo.RetriesStream(), topology.RetryConsumer("gateway")); err != nil {
		t.Fatal(err)
	}
	f, err := e.Topo.Footprint(ctx, e.JS, "gateway")
	if err != nil {
		t.Fatal(err)
	}
	if !f.Exists() || f.Floors != 1 || len(f.Consumers) != 0 {
		t.Fatalf("footprint %+v; want no consumers, 1 floor, and something to remove", f)
	}
	if _, err := e.Topo.RemoveSink(ctx, e.JS, "gateway"); err != nil {
		t.Fatal(err)
	}
	if keys := floorKeys(t, e); len(keys) != 0 {
		t.Fatalf("floors left after sinks remove: %v", keys)
	}
}
