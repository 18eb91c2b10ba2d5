package topology_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/embedded"
	"github.com/chapar-dev/chapar/internal/topology"
)

// BenchmarkSweepOfDueRetries is nats-server's sweep of message schedules
// that fall due at one instant (a retry storm, docs/benchmarks.md): n
// schedules in work-queue streams like CHAPAR_RETRIES, all due at the same
// time, and a probe publishing to another stream (the events stream) one
// message at a time meanwhile. It asks what Chapar could change: the
// size of a retry copy, and spreading the retries over several streams
// (each stream has its own scheduler, timer and store lock).
//
// Reported per sweep: moved-ms, from the due time until the server has
// moved the last schedule to its target; and the probe's publish → ack
// latency during the sweep, p99 and max. Compare the cases with each other
// in one run (-benchtime=1x -count=3); absolute figures depend on the
// machine's load.
//
//	go test -run '^$' -bench SweepOfDueRetries -benchtime=1x -count=3 ./internal/topology
func BenchmarkSweepOfDueRetries(b *testing.B) {
	const n = 20000
	for _, c := range []struct {
		streams, body int
	}{{1, 1000}, {4, 1000}, {1, 100}} {
		b.Run(fmt.Sprintf("streams=%d/body=%dB", c.streams, c.body), func(b *testing.B) {
			var moved, p99, worst time.Duration
			for range b.N {
				m, lat := sweepOnce(b, n, c.streams, c.body)
				moved += m
				p99 += lat[min(len(lat)-1, len(lat)*99/100)]
				worst += lat[len(lat)-1]
			}
			per := func(d time.Duration) float64 { return float64(d) / float64(b.N) / float64(time.Millisecond) }
			b.ReportMetric(per(moved), "moved-ms")
			b.ReportMetric(per(p99), "probe-p99-ms")
			b.ReportMetric(per(worst), "probe-max-ms")
			b.ReportMetric(0, "ns/op") // the op is one sweep; its wall time says nothing here
		})
	}
}

// BenchmarkWaitingRetryMemory is what a waiting retry costs nats-server's
// heap (in this process: the embedded server): n schedules of body bytes
// due in an hour, in one work-queue stream like CHAPAR_RETRIES, the heap
// in use after a GC with none and with all n waiting, once the file
// store's block caches (10 s) have expired. Reported as heap-MiB/M-retries:
// per million waiting retries.
//
//	go test -run '^$' -bench WaitingRetryMemory -benchtime=1x -count=3 ./internal/topology
func BenchmarkWaitingRetryMemory(b *testing.B) {
	const n = 50000
	for _, body := range []int{1000, 100} {
		b.Run(fmt.Sprintf("body=%dB", body), func(b *testing.B) {
			var per float64
			for range b.N {
				per += waitingHeap(b, n, body)
			}
			b.ReportMetric(per/float64(b.N), "heap-MiB/M-retries")
			b.ReportMetric(0, "ns/op")
		})
	}
}

func waitingHeap(b *testing.B, n, body int) float64 {
	s, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1000))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "WAIT", Subjects: []string{"wait.>"}, Retention: jetstream.WorkQueuePolicy,
		AllowMsgSchedules: true, Storage: jetstream.FileStorage,
	}); err != nil {
		b.Fatal(err)
	}
	heap := func() uint64 {
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	before := heap()
	due := time.Now().Add(time.Hour)
	payload := []byte(strings.Repeat("x", body))
	for i := range n {
		// Named as Chapar names a retry: sink, origin, replays, attempts.
		msg := nats.NewMsg(fmt.Sprintf("chapar.retry.wait.chabok-0.%d-0-1", 1_000_000+i))
		msg.Subject = "wait" + msg.Subject[len("chapar.retry.wait"):]
		msg.Data = payload
		topology.Schedule(msg.Header, due, "wait.due")
		if _, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal("schedules not stored")
	}
	time.Sleep(12 * time.Second) // past the block caches' expiry: what stays is the retries' cost
	after := heap()
	if after < before {
		return 0
	}
	return float64(after-before) / (1 << 20) / float64(n) * 1e6
}

// sweepOnce schedules n messages of body bytes over streams streams, all
// due at one instant, and returns how long after it the server had moved
// them all, and the probe's sorted publish latencies during the sweep.
func sweepOnce(b *testing.B, n, streams, body int) (time.Duration, []time.Duration) {
	b.StopTimer()
	s, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1000))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var handles []jetstream.Stream
	for k := range streams {
		st, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name: fmt.Sprintf("SWEEP_%d", k), Subjects: []string{fmt.Sprintf("sweep%d.>", k)},
			Retention: jetstream.WorkQueuePolicy, AllowMsgSchedules: true, Storage: jetstream.FileStorage,
		})
		if err != nil {
			b.Fatal(err)
		}
		handles = append(handles, st)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "PROBE", Subjects: []string{"probe.>"}, Storage: jetstream.FileStorage}); err != nil {
		b.Fatal(err)
	}
	// Due once every schedule is surely stored: the publishes take well
	// under 300 µs each here, even on a busy machine.
	due := time.Now().Add(2*time.Second + time.Duration(n)*300*time.Microsecond)
	payload := []byte(strings.Repeat("x", body))
	for i := range n {
		k := i % streams
		msg := nats.NewMsg(fmt.Sprintf("sweep%d.wait.%d", k, i))
		msg.Data = payload
		topology.Schedule(msg.Header, due, fmt.Sprintf("sweep%d.due", k))
		if _, err := js.PublishMsgAsync(msg, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		b.Fatal("schedules not stored")
	}
	if time.Now().After(due.Add(-200 * time.Millisecond)) {
		b.Fatalf("storing %d schedules took past their due time: the machine is too busy for this margin", n)
	}
	var l0 []uint64
	for _, st := range handles {
		info, err := st.Info(ctx)
		if err != nil {
			b.Fatal(err)
		}
		l0 = append(l0, info.State.LastSeq)
	}
	stop := make(chan struct{})
	lats := make(chan []time.Duration, 1)
	go func() { lats <- probe(ctx, js, due, stop) }()
	b.StartTimer()
	var last time.Time
	for {
		var moved uint64
		for k, st := range handles {
			info, err := st.Info(ctx)
			if err != nil {
				b.Fatal(err)
			}
			moved += info.State.LastSeq - l0[k]
			if info.State.LastSeq > l0[k] && info.State.LastTime.After(last) {
				last = info.State.LastTime
			}
		}
		if moved >= uint64(n) {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("moved %d of %d", moved, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	b.StopTimer()
	close(stop)
	lat := <-lats
	if len(lat) == 0 {
		lat = []time.Duration{0}
	}
	return last.Sub(due), lat
}

// probe publishes to PROBE every 10 ms from due until stop, one at a time,
// and returns the sorted ack latencies.
func probe(ctx context.Context, js jetstream.JetStream, due time.Time, stop <-chan struct{}) []time.Duration {
	var out []time.Duration
	time.Sleep(time.Until(due))
	for i := 0; ; i++ {
		select {
		case <-stop:
			slices.Sort(out)
			return out
		case <-time.After(time.Until(due.Add(time.Duration(i) * 10 * time.Millisecond))):
		}
		t0 := time.Now()
		if _, err := js.Publish(ctx, "probe.x", []byte("probe")); err != nil {
			slices.Sort(out)
			return out
		}
		out = append(out, time.Since(t0))
	}
}
