package dispatch_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// writeBackJS orders two replicas' binds after a loss: A recreates the
// consumer from the floor (marked By A) and reports it; B, starting after
// A's create, skips the mark (A's, young), and its keep reads the consumer
// still marked; A's keep then clears the mark; B's keep's update, sent
// after, writes the config B read back: the mark with it.
type writeBackJS struct {
	jetstream.JetStream
	role    string // "a" or "b"
	durable string
	o       *writeBackOrder
}

type writeBackOrder struct {
	aCreated, bRead, aCleared chan struct{}
	o1, o2, o3                sync.Once
}

func (j *writeBackJS) CreateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	c, err := j.JetStream.CreateConsumer(ctx, stream, cfg)
	if j.role == "a" && err == nil && cfg.Durable == j.durable && calledFrom("topology.RecreateConsumer") {
		j.o.o1.Do(func() { close(j.o.aCreated) })
	}
	return c, err
}

func (j *writeBackJS) Consumer(ctx context.Context, stream, name string) (jetstream.Consumer, error) {
	c, err := j.JetStream.Consumer(ctx, stream, name)
	if j.role == "b" && err == nil && name == j.durable && calledFrom("topology.ensureEvents") {
		j.o.o2.Do(func() { close(j.o.bRead) })
	}
	return c, err
}

func (j *writeBackJS) UpdateConsumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if cfg.Durable != j.durable || !calledFrom("topology.keep") {
		return j.JetStream.UpdateConsumer(ctx, stream, cfg)
	}
	wait := j.o.bRead
	if j.role == "b" {
		wait = j.o.aCleared
	}
	select {
	case <-wait:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	c, err := j.JetStream.UpdateConsumer(ctx, stream, cfg)
	if j.role == "a" && err == nil {
		j.o.o3.Do(func() { close(j.o.aCleared) })
	}
	return c, err
}

// One loss, two replicas binding at once, counted once by 40d7ca5 (A
// reports; B leaves A's mark to A). But B's keep, sent without a report
// (report nil: "the mark stays"), merges the metadata it read: read
// before A's clearing and sent after it, it puts the mark back. The
// consumer then says "lost, unreported" of a loss A counted; the next
// start 30 s on (any replica's, a new process) reports it again: 2 for
// one loss, delayed to a later start. (Before 40d7ca5 B counted it at
// once; the double count is moved, not removed, on this path.) Red.
func TestReviewRev23AMarkWrittenBackByAnotherReplicasKeepIsCountedAgainLater(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e, logs, sink, routes := gatewayStoppedAtThree(t)
	backlog := lostWithTwoGone(t, e)
	durable := topology.SinkConsumer("gateway")
	o := &writeBackOrder{aCreated: make(chan struct{}), bRead: make(chan struct{}), aCleared: make(chan struct{})}
	_, jsA := e.Connect()
	_, jsB := e.Connect()
	var tallyA, tallyB interface{ ConsumersLost(string) (int, int) }
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		tallyA, _ = startOn(t, e, &writeBackJS{JetStream: jsA, role: "a", durable: durable, o: o}, []config.Sink{sink}, routes, nil)
	}()
	go func() {
		defer wg.Done()
		select {
		case <-o.aCreated:
		case <-time.After(60 * time.Second):
			t.Error("A did not recreate the consumer in 60 s")
			return
		}
		tallyB, _ = startOn(t, e, &writeBackJS{JetStream: jsB, role: "b", durable: durable, o: o}, []config.Sink{sink}, routes, nil)
	}()
	wg.Wait()
	if tallyA == nil || tallyB == nil {
		t.FailNow()
	}
	testenv.Eventually(t, 20*time.Second, "the rest of the backlog delivered", allDelivered(t, e, backlog[2:]))
	la, _ := tallyA.ConsumersLost("gateway")
	lb, _ := tallyB.ConsumersLost("gateway")
	info := gatewayInfo(t, e)
	t.Logf("after both binds: A counted %d, B %d; mark on the consumer: %+v", la, lb, markOf(t, info))
	// A later start, once the mark is past the patience on the server's
	// clock (a condition on the server's answer, not a sleep).
	testenv.Eventually(t, 60*time.Second, "the mark past lostReportPatience (30 s) on the server's clock", func() bool {
		i := gatewayInfo(t, e)
		return i.TimeStamp.Sub(i.Created) > 31*time.Second
	})
	_, jsC := e.Connect()
	tallyC, _ := startOn(t, e, jsC, []config.Sink{sink}, routes, nil)
	lc, _ := tallyC.ConsumersLost("gateway")
	if la+lb+lc != 1 {
		t.Errorf("losses counted by A %d, B %d, a later start %d; want 1 in all (one consumer lost once; 'cannot be delivered' lines: %d)",
			la, lb, lc, (&zapLogs{logs}).gone())
	}
}
