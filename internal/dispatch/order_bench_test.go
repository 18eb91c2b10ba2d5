package dispatch_test

import (
	"context"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// countHealthy counts the events of every key but the hot one that the
// vendor accepted, and makes each request take latency first, as a remote
// vendor's would: the sink's rate is then bound by its workers, not by the
// CPU this benchmark shares with other work.
type countHealthy struct {
	sinks.Sink
	hot     string
	n       *atomic.Int64
	latency time.Duration
}

func (c countHealthy) Deliver(ctx context.Context, d *sinks.Delivery) error {
	t := time.NewTimer(c.latency)
	select {
	case <-ctx.Done():
		t.Stop()
		return ctx.Err()
	case <-t.C:
	}
	err := c.Sink.Deliver(ctx, d)
	if err == nil && d.Event.Subject != c.hot {
		c.n.Add(1)
	}
	return err
}

// BenchmarkOrderHotKey is the rate of healthy keys on an ordered sink
// (by_user, 16 workers, a vendor taking 10 ms a request) while one hot key, one event in 50, is stuck: its
// head fails with 503 for the whole round, retried in place, and its later
// events wait in its lane; against a clean round, the same traffic with the
// hot key healthy. Rounds alternate clean, stuck, clean, … (three pairs of
// b.N events each, a fresh server each), so that the machine's load, shared
// with other work, falls on both alike; it reports the median rate of each
// and stuck/clean:
//
//	go test ./internal/dispatch -run XXX -bench OrderHotKey -benchtime 5000x
//
// The bound: a stuck key holds its events in memory and in the sink's
// max_ack_pending window; the others go at full speed until the stuck key
// holds max_ack_pending − concurrency of them (here 1000 − 16; a round of
// 5000 holds 100 at most).
func BenchmarkOrderHotKey(b *testing.B) {
	if b.N < 100 {
		return // the probe run with b.N = 1; use -benchtime 5000x
	}
	var rates [2][]float64
	for round := range 6 {
		stuck := round%2 == 1
		rate := hotKeyRound(b, stuck)
		rates[round%2] = append(rates[round%2], rate)
	}
	clean, stuck := median(rates[0]), median(rates[1])
	b.ReportMetric(clean, "clean_events/s")
	b.ReportMetric(stuck, "stuck_events/s")
	b.ReportMetric(stuck/clean, "stuck/clean")
	b.Logf("healthy keys, events/s: clean %v, stuck %v", rates[0], rates[1])
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// hotKeyRound publishes b.N events and returns the rate at which the
// healthy keys' events were accepted.
func hotKeyRound(b *testing.B, stuck bool) float64 {
	b.StopTimer()
	e := testenv.New(b)
	sink := e.Sink("gateway", emulator.MetrixGateway, slugs, nil)
	sink.Concurrency = 16
	sink.Order = &config.Order{Key: config.OrderByUser}
	sink.Retry.MaxAttempts = 1 << 30 // retried for the whole round
	sink.Breaker.FailureThreshold = 1 << 30
	const hot = "hot-user"
	if stuck {
		e.Emu.Vendor(emulator.MetrixGateway).SetFault(emulator.Fault{Status: 503, Match: hot})
	}
	var healthy atomic.Int64
	d := e.StartWrapped([]config.Sink{sink}, gatewayRoute, func(_ string, s sinks.Sink) sinks.Sink {
		return countHealthy{Sink: s, hot: hot, n: &healthy, latency: 10 * time.Millisecond}
	})
	defer d.Stop()
	var raws [][]byte
	var ids []string
	want := 0
	for i := range b.N {
		user := fmt.Sprintf("u%d", i%500)
		if i%50 == 0 {
			user = hot
		} else {
			want++
		}
		env := testenv.Track(b, "order_paid", user, envelope.WithSubject(user))
		raw, _ := env.Marshal()
		raws, ids = append(raws, raw), append(ids, env.ID)
	}
	subject := e.Topo.EventSubject(envelope.TypeTrack)
	b.StartTimer()
	start := time.Now()
	for i := range b.N {
		if _, err := e.JS.PublishAsync(subject, raws[i], jetstream.WithMsgID(ids[i])); err != nil {
			b.Fatal(err)
		}
	}
	<-e.JS.PublishAsyncComplete()
	for healthy.Load() < int64(want) {
		if time.Since(start) > 5*time.Minute {
			b.Fatalf("healthy keys: %d of %d delivered in 5m", healthy.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
	took := time.Since(start)
	b.StopTimer()
	return float64(want) / took.Seconds()
}
