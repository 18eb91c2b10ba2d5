package dispatch_test

// Issue 19, "self-healing consumers": a sink's consumer deleted (an
// operator's `nats consumer rm`) or lost while the dispatcher runs is
// noticed, recreated where it was, counted, and /readyz says so meanwhile;
// nothing is lost and no restart is needed.

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/metrics"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// readyzAtLoss is the real metrics observer, serving the real /readyz,
// that asks /readyz the moment a consumer is reported lost (the healer
// recreates it only after ConsumerLost returns, so the answer is the one
// an orchestrator gets while the consumer is gone).
type readyzAtLoss struct {
	*metrics.Metrics
	url string

	mu     sync.Mutex
	atLoss []string // /readyz's answers at each loss
	lost   int
	back   int
}

func (r *readyzAtLoss) ConsumerLost(sink string) {
	r.Metrics.ConsumerLost(sink)
	status, body := getReadyz(r.url)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lost++
	r.atLoss = append(r.atLoss, status+" "+body)
}

func (r *readyzAtLoss) ConsumerBack(sink string) {
	r.Metrics.ConsumerBack(sink)
	r.mu.Lock()
	r.back++
	r.mu.Unlock()
}

func (r *readyzAtLoss) counts() (lost, back int, atLoss []string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lost, r.back, append([]string(nil), r.atLoss...)
}

func getReadyz(url string) (status, body string) {
	resp, err := http.Get(url + "/readyz")
	if err != nil {
		return "error", err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.Status, strings.TrimSpace(string(b))
}

// startObserved runs a dispatcher with obs as its observer until the test
// ends, and returns once it is ready.
func startObserved(t *testing.T, e *testenv.Env, sinkCfgs []config.Sink, routes []config.Route, obs dispatch.Observer, ready *atomic.Bool) {
	t.Helper()
	_, js := e.Connect()
	d, err := dispatch.New(e.Config(sinkCfgs, routes), dispatch.Options{Observer: obs, Logger: e.Log, Ready: func() { ready.Store(true) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx, js) }()
	t.Cleanup(func() { cancel(); <-done })
	testenv.Eventually(t, 30*time.Second, "the dispatcher ready", ready.Load)
}

// keepEventsUnderInterest: under interest retention JetStream deletes an
// event as soon as no consumer still wants it, and a stream without
// consumers keeps nothing published to it, so while a sink's only
// consumer is gone its events are gone too, and no healing can bring them
// back (docs/design.md, "Self-healing consumers"). This test is about the
// healing: under interest retention it keeps one more consumer on the
// stream that never acks, as the other sinks of a deployment would until
// they ack. Under limits retention it adds nothing.
func keepEventsUnderInterest(t *testing.T, e *testenv.Env) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, name := range e.Topo.EventsStreams() {
		st, err := e.JS.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		if st.CachedInfo().Config.Retention != jetstream.InterestPolicy {
			continue
		}
		if _, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "WITNESS", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestDeletedEventsConsumerIsRecreatedWhereItWas(t *testing.T) {
	e := testenv.New(t)
	keepEventsUnderInterest(t, e)
	hook := e.Sink("hook", emulator.Webhook, nil, nil)
	routes := []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"hook"}}}
	m := metrics.New("hook")
	var ready atomic.Bool
	admin := httptest.NewServer(m.Admin(e.NC, &ready))
	t.Cleanup(admin.Close)
	obs := &readyzAtLoss{Metrics: m, url: admin.URL}
	startObserved(t, e, []config.Sink{hook}, routes, obs, &ready)

	publish := func(n int) []string {
		ids := make([]string, n)
		for i := range ids {
			env := testenv.Track(t, "order_paid", "u1")
			ids[i] = env.ID
			e.Publish(env)
		}
		return ids
	}
	allAtVendor := func(ids []string) func() bool {
		return func() bool {
			seen := webhookRequestsPerID(t, e)
			for _, id := range ids {
				if seen[id] == 0 {
					return false
				}
			}
			return true
		}
	}
	before := publish(5)
	testenv.Eventually(t, 10*time.Second, "the first events delivered", allAtVendor(before))
	if status, body := getReadyz(admin.URL); !strings.HasPrefix(status, "200") {
		t.Fatalf("/readyz before the loss: %s %s", status, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, name := e.Topo.EventsStream(), topology.SinkConsumer("hook")
	if err := e.JS.DeleteConsumer(ctx, stream, name); err != nil {
		t.Fatal(err)
	}
	after := publish(20)
	testenv.Eventually(t, 20*time.Second, "the 20 events published while the consumer was gone delivered", allAtVendor(after))

	testenv.Eventually(t, 10*time.Second, "the loss counted and over", func() bool {
		lost, back, _ := obs.counts()
		return lost == 1 && back == 1
	})
	_, _, atLoss := obs.counts()
	if !strings.HasPrefix(atLoss[0], "503") || !strings.Contains(atLoss[0], "hook") {
		t.Errorf("/readyz while the consumer was gone: %q, want 503 naming the sink", atLoss[0])
	}
	testenv.Eventually(t, 10*time.Second, "/readyz ready again", func() bool {
		status, _ := getReadyz(admin.URL)
		return strings.HasPrefix(status, "200")
	})
	again, err := e.JS.Consumer(ctx, stream, name)
	if err != nil {
		t.Fatalf("the consumer was not recreated: %v", err)
	}
	if c := again.CachedInfo().Config; c.DeliverPolicy != jetstream.DeliverByStartSequencePolicy || c.OptStartSeq == 0 || c.OptStartSeq > 6 {
		t.Errorf("recreated with %v from %d, want from the old ack floor (at most sequence 6)", c.DeliverPolicy, c.OptStartSeq)
	}
	seen := webhookRequestsPerID(t, e)
	dups := 0
	for _, id := range append(before, after...) {
		dups += seen[id] - 1
	}
	t.Logf("%d of %d events delivered again after the recreation (at-least-once)", dups, len(before)+len(after))

	// A dispatcher started now keeps the recreated consumer's start (a
	// consumer's start cannot be updated): before, its start failed.
	d2 := e.Start([]config.Sink{hook}, routes)
	more := publish(3)
	testenv.Eventually(t, 10*time.Second, "events delivered with a second replica up", allAtVendor(more))
	_ = d2
}

// A retry waiting in the retries stream when the sink's retries consumer
// is deleted is delivered when it falls due, without a restart.
func TestDeletedRetriesConsumerIsRecreatedAndTheRetryDelivered(t *testing.T) {
	t.Parallel() // waits on a 2 s backoff and the healer, not the CPU
	e := testenv.New(t)
	hook := e.Sink("hook", emulator.Webhook, nil, nil)
	hook.Retry.InitialInterval, hook.Retry.MaxInterval = 2*time.Second, 2*time.Second
	vendor := e.Emu.Vendor(emulator.Webhook)
	vendor.SetFault(emulator.Fault{Status: 503, Count: 1})
	d := e.Start([]config.Sink{hook}, []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"hook"}}})
	env := testenv.Track(t, "order_paid", "u1")
	e.Publish(env)
	testenv.Eventually(t, 10*time.Second, "the first attempt failed and its retry stored", func() bool {
		_, _, sinks := d.Tally.Snapshot()
		return vendor.Count(503) == 1 && len(sinks) == 1 && sinks[0].Retried == 1
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rs, err := e.JS.Stream(ctx, e.Topo.RetriesStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.DeleteConsumer(ctx, topology.RetryConsumer("hook")); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 20*time.Second, "the waiting retry delivered", func() bool { return d.Tally.DeliveredTo("hook") == 1 })
	testenv.Eventually(t, 10*time.Second, "the loss counted and over", func() bool {
		lost, down := d.Tally.ConsumersLost("hook")
		return lost == 1 && down == 0
	})
	if got := webhookRequestsPerID(t, e)[env.ID]; got != 1 {
		t.Errorf("the event reached the vendor %d times, want once", got)
	}
}

// An ordered sink's events consumer heals the same way (order.go is not
// told: its pulls resume once the consumer is back), and each key's events
// still reach the vendor in order, resends allowed.
func TestDeletedOrderedConsumerIsRecreated(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.New(t)
	keepEventsUnderInterest(t, e)
	k := newKeyed(t, []string{"u0", "u1", "u2"}, 8)
	d := e.Start([]config.Sink{orderedSink(e)}, gatewayRoute)
	half := len(k.envs) / 2
	k.publish(e, 0, half)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.JS.DeleteConsumer(ctx, e.Topo.EventsStream(), topology.SinkConsumer("gateway")); err != nil {
		t.Fatal(err)
	}
	k.publish(e, half, len(k.envs))
	testenv.Eventually(t, 45*time.Second, "every event delivered", k.delivered(t, e))
	resent := k.checkOrder(t, e, true)
	lost, down := d.Tally.ConsumersLost("gateway")
	if lost != 1 || down != 0 {
		t.Errorf("consumers lost %d, still down %d; want 1 and 0", lost, down)
	}
	t.Logf("%d events resent after the recreation", resent)
}

// With partitions, each partition's consumer heals on its own: the one
// deleted is recreated, the other is left alone, and every event of both
// reaches the vendor.
func TestDeletedPartitionConsumerIsRecreated(t *testing.T) {
	t.Parallel() // mostly waits out server-side clocks (max_age, leases, ack_wait, settle times)
	e := testenv.NewPartitioned(t, 2)
	keepEventsUnderInterest(t, e)
	d := e.Start([]config.Sink{e.Sink("hook", emulator.Webhook, nil, nil)}, []config.Route{{Types: []string{envelope.TypeTrack}, Sinks: []string{"hook"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.JS.DeleteConsumer(ctx, e.Topo.EventsStreamOf(1), topology.SinkConsumer("hook")); err != nil {
		t.Fatal(err)
	}
	var ids []string
	inOne := 0
	for u := range 20 {
		env := partitionedTrack(t, u, 0)
		if envelope.Partition(env.PartitionKey(), 2) == 1 {
			inOne++
		}
		ids = append(ids, env.ID)
		e.Publish(env)
	}
	if inOne == 0 {
		t.Fatal("no event fell in the partition whose consumer was deleted")
	}
	testenv.Eventually(t, 20*time.Second, "every event delivered", func() bool {
		seen := webhookRequestsPerID(t, e)
		for _, id := range ids {
			if seen[id] == 0 {
				return false
			}
		}
		return true
	})
	if lost, down := d.Tally.ConsumersLost("hook"); lost != 1 || down != 0 {
		t.Errorf("consumers lost %d, still down %d; want 1 and 0", lost, down)
	}
}
