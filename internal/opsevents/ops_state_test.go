package opsevents_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/opsevents"
	"github.com/chapar-dev/chapar/internal/redeliver"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// marker pauses sink and waits for its sink_paused event to be stored:
// anything the publisher queued before it is stored by then (one
// publisher, in order), so a test can then assert what is not there.
func marker(t *testing.T, e *testenv.Env, sink string) {
	t.Helper()
	before := len(ofType(t, e, envelope.TypeOpsSinkPaused))
	if err := e.Topo.SetOperatorPause(context.Background(), e.JS, sink, topologyPause(true)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the marker's sink_paused stored", func() bool {
		return len(ofType(t, e, envelope.TypeOpsSinkPaused)) == before+1
	})
}

// A breaker that opens and closes again is published, each with what
// led to it; a recovery the breaker reports is not reported twice.
func TestBreakerOpenedAndClosedArePublished(t *testing.T) {
	e := testenv.New(t)
	flaky, v := hook(t, e, "flaky", http.StatusServiceUnavailable)
	flaky.Breaker = retry.BreakerSettings{FailureThreshold: recoveredAfter, OpenTimeout: 300 * time.Millisecond, Interval: time.Minute}
	p := start(t, e, []config.Sink{flaky}, []config.Route{{Sinks: []string{"flaky"}}}, enabled())
	e.Publish(testenv.Track(t, "order_paid", "u1"))

	testenv.Eventually(t, 10*time.Second, "breaker_opened stored", func() bool {
		return len(ofType(t, e, envelope.TypeOpsBreakerOpened)) >= 1
	})
	v.status.Store(0)
	testenv.Eventually(t, 10*time.Second, "breaker_closed stored and the event delivered", func() bool {
		return len(ofType(t, e, envelope.TypeOpsBreakerClosed)) == 1 && p.obs.DeliveredTo("flaky") == 1
	})
	opened := ofType(t, e, envelope.TypeOpsBreakerOpened)[0]
	d := data(t, opened)
	if d["sink"] != "flaky" || d["failures"].(float64) < recoveredAfter || !strings.Contains(d["last_error"].(string), "503") || opened.Subject != "flaky" {
		t.Errorf("breaker_opened: subject %q, data %s", opened.Subject, opened.Data)
	}
	closed := data(t, ofType(t, e, envelope.TypeOpsBreakerClosed)[0])
	if closed["sink"] != "flaky" || closed["open_seconds"].(float64) <= 0 || closed["opened_at"] == nil {
		t.Errorf("breaker_closed: data %v", closed)
	}
	marker(t, e, "flaky")
	if n := len(ofType(t, e, envelope.TypeOpsSinkRecovered)); n != 0 {
		t.Errorf("%d sink_recovered events beside breaker_closed, want 0", n)
	}
}

// A sink that fails recoveredAfter requests in a row without opening its
// breaker, then answers, is reported recovered.
func TestSinkRecoveredAfterFailures(t *testing.T) {
	e := testenv.New(t)
	slow, v := hook(t, e, "slow", 0)
	slow.Breaker.FailureThreshold = 100
	v.fails.Store(3)
	p := start(t, e, []config.Sink{slow}, []config.Route{{Sinks: []string{"slow"}}}, enabled())
	e.Publish(testenv.Track(t, "order_paid", "u1"))
	testenv.Eventually(t, 10*time.Second, "sink_recovered stored", func() bool {
		return len(ofType(t, e, envelope.TypeOpsSinkRecovered)) == 1
	})
	want(t, ofType(t, e, envelope.TypeOpsSinkRecovered)[0], map[string]any{"sink": "slow", "failures": 3.0})
	if p.obs.DeliveredTo("slow") != 1 {
		t.Errorf("delivered %d, want 1", p.obs.DeliveredTo("slow"))
	}
}

// An operator's pause and resumption are one ops event each for the
// deployment, though every replica applies them: the pause record's
// revision names the event, and the stream stores it once.
func TestOperatorPauseIsOneOpsEventForTheDeployment(t *testing.T) {
	e := testenv.New(t)
	shop, _ := hook(t, e, "shop", 0)
	sinks, routes := []config.Sink{shop}, []config.Route{{Sinks: []string{"shop"}}}
	a := start(t, e, sinks, routes, enabled())
	b := start(t, e, sinks, routes, enabled())
	for _, c := range []struct {
		paused bool
		typ    string
	}{{true, envelope.TypeOpsSinkPaused}, {false, envelope.TypeOpsSinkResumed}} {
		if err := e.Topo.SetOperatorPause(context.Background(), e.JS, "shop", topologyPause(c.paused)); err != nil {
			t.Fatal(err)
		}
		testenv.Eventually(t, 10*time.Second, "both replicas published "+c.typ, func() bool {
			return a.obs.count(c.typ, opsevents.Published) == 1 && b.obs.count(c.typ, opsevents.Published) == 1
		})
		evs := ofType(t, e, c.typ)
		if len(evs) != 1 {
			t.Fatalf("%d %s events stored, want 1", len(evs), c.typ)
		}
		want(t, evs[0], map[string]any{"sink": "shop", "by": "test"})
		if rev, _ := data(t, evs[0])["revision"].(float64); rev < 1 {
			t.Errorf("%s: revision %v", c.typ, data(t, evs[0])["revision"])
		}
	}
}

// A storm of dead letters is bounded by its type's bucket: burst events,
// then one chapar.ops.suppressed counting the rest once the storm is
// quiet.
func TestDeadLetterStormIsBounded(t *testing.T) {
	e := testenv.New(t)
	shop, _ := hook(t, e, "shop", http.StatusBadRequest)
	ops := config.OpsEvents{Enabled: true, PerMinute: 1, Burst: 3, Buffer: 1024}
	p := start(t, e, []config.Sink{shop}, []config.Route{{Sinks: []string{"shop"}}}, ops)
	const storm = 40
	for i := range storm {
		e.Publish(testenv.Track(t, "order_paid", "u"+string(rune('a'+i%26))))
	}
	testenv.Eventually(t, 20*time.Second, "the summary stored", func() bool {
		return len(ofType(t, e, envelope.TypeOpsSuppressed)) == 1
	})
	if n := len(ofType(t, e, envelope.TypeOpsDeadLettered)); n != 3 {
		t.Errorf("%d dead_lettered events stored in a storm of %d, want the burst, 3", n, storm)
	}
	want(t, ofType(t, e, envelope.TypeOpsSuppressed)[0], map[string]any{
		"type": envelope.TypeOpsDeadLettered, "sink": "shop", "suppressed": float64(storm - 3)})
	if n := p.obs.count(envelope.TypeOpsDeadLettered, opsevents.Suppressed); n != storm-3 {
		t.Errorf("counted %d suppressed, want %d", n, storm-3)
	}
}

// A sink's consumer deleted under it is recreated by its healer, and
// that is published.
func TestConsumerRecreatedIsPublished(t *testing.T) {
	e := testenv.New(t)
	shop, _ := hook(t, e, "shop", 0)
	start(t, e, []config.Sink{shop}, []config.Route{{Sinks: []string{"shop"}}}, enabled())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.JS.DeleteConsumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("shop")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "consumer_recreated stored", func() bool {
		return len(ofType(t, e, envelope.TypeOpsConsumerHealed)) == 1
	})
	ev := ofType(t, e, envelope.TypeOpsConsumerHealed)[0]
	if d := data(t, ev); d["sink"] != "shop" || d["lost_at"] == nil || ev.Subject != "shop" {
		t.Errorf("consumer_recreated: subject %q, data %s", ev.Subject, ev.Data)
	}
}

// recoveredAfter is the package's: a breaker opening after as many
// failures makes the run long enough for sink_recovered.
const recoveredAfter = 3

// A replay (the CLI's, the console's: opsevents.Store) is reported once
// done, with its counts; a dry run is not.
func TestReplayDoneIsPublished(t *testing.T) {
	e := testenv.New(t)
	shop, v := hook(t, e, "shop", http.StatusBadRequest)
	sinks, routes := []config.Sink{shop}, []config.Route{{Sinks: []string{"shop"}}}
	p := start(t, e, sinks, routes, enabled())
	e.Publish(testenv.Track(t, "order_paid", "u1"))
	testenv.Eventually(t, 10*time.Second, "the dead letter", func() bool {
		return p.obs.count(envelope.TypeOpsDeadLettered, opsevents.Published) == 1
	})
	v.status.Store(0)
	cfg := e.Config(sinks, routes)
	cfg.OpsEvents = enabled()
	var warned []error
	st := opsevents.NewStore(dlq.NewStore(e.JS, e.Topo), e.JS, cfg, "test", func(err error) { warned = append(warned, err) })
	ctx := context.Background()
	if _, err := st.Replay(ctx, dlq.Filter{Sink: "shop"}, dlq.ReplayOptions{DryRun: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Replay(ctx, dlq.Filter{Sink: "shop"}, dlq.ReplayOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, "the replayed event delivered", func() bool { return p.obs.DeliveredTo("shop") == 1 })
	done := ofType(t, e, envelope.TypeOpsReplayDone)
	if len(done) != 1 || len(warned) != 0 {
		t.Fatalf("%d replay_done events stored (want 1: the dry run reports none), warnings %v", len(done), warned)
	}
	want(t, done[0], map[string]any{"sink": "shop", "matched": 1.0, "replayed": 1.0, "skipped": 0.0, "by": "test"})
	if done[0].Subject != "shop" {
		t.Errorf("replay_done about %q, want shop", done[0].Subject)
	}
}

// A redelivery that ran (not a dry run) is reported once, with what it
// re-sent, as a replay is.
func TestRedeliveryDoneIsPublished(t *testing.T) {
	e := testenv.New(t)
	shop, _ := hook(t, e, "shop", http.StatusOK)
	sinks, routes := []config.Sink{shop}, []config.Route{{Sinks: []string{"shop"}}}
	p := start(t, e, sinks, routes, enabled())
	since := time.Now().Add(-time.Minute)
	e.Publish(testenv.Track(t, "order_paid", "u1"))
	e.Publish(testenv.Track(t, "order_paid", "u2"))
	testenv.Eventually(t, 10*time.Second, "both delivered", func() bool { return p.obs.DeliveredTo("shop") == 2 })
	cfg := e.Config(sinks, routes)
	cfg.OpsEvents = enabled()
	r := redeliver.Runner{JS: e.JS, Topo: e.Topo, Config: cfg,
		Ended: func(ctx context.Context, sink string, res redeliver.Result, err error) {
			if perr := opsevents.PublishRedeliveryDone(ctx, e.JS, cfg, sink, "test", res, err); perr != nil {
				t.Error(perr)
			}
		}}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := r.Redeliver(ctx, "shop", redeliver.Filter{Since: since}, true, nil); err != nil {
		t.Fatal(err)
	}
	res, err := r.Redeliver(ctx, "shop", redeliver.Filter{Since: since}, false, nil)
	if err != nil || res.Sent != 2 {
		t.Fatalf("redelivery: %+v, %v", res, err)
	}
	done := ofType(t, e, envelope.TypeOpsRedeliveryDone)
	if len(done) != 1 {
		t.Fatalf("%d redelivery_done events stored (want 1: the dry run reports none)", len(done))
	}
	want(t, done[0], map[string]any{"sink": "shop", "sent": 2.0, "matched": 2.0, "by": "test", "job": res.Job})
}
