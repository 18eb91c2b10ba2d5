package lookup_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/deliveries"
	"github.com/chapar-dev/chapar/internal/embedded"
	"github.com/chapar-dev/chapar/internal/jsread"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

var (
	schemeEvents = flag.Int("records.events", 0, "measure what delivery records cost nats-server with this many events' records (two sinks each) stored (a long run: docs/benchmarks.md)")
	schemeIdle   = flag.Bool("records.idle", false, "also measure the server's heap after 150 s idle, when blocks' per-subject state has expired")
	schemeName   = flag.String("records.scheme", "key", "the records' subjects to measure: key (one per event), hex3 (4,096 buckets) or hex4 (65,536 buckets)")
)

// serverRoleEnv makes this test binary run as nats-server, so that the
// server's CPU and heap are measured apart from the test's.
const serverRoleEnv = "CHAPAR_LOOKUP_ROLE"

func TestMain(m *testing.M) {
	if os.Getenv(serverRoleEnv) == "nats-server" {
		os.Exit(embedded.ServerMain(os.Args[1:]))
	}
	os.Exit(m.Run())
}

// recordSubject is a scheme measured: where an event's records go, one
// subject per event (key, as records were first kept) or a bucket of
// 4,096 (hex3) or 65,536 (hex4).
func recordSubject(scheme string) (func(prefix, id string) string, bool) {
	token := map[string]func([]byte) string{
		"key":  func(sum []byte) string { return base64.RawURLEncoding.EncodeToString(sum[:16]) },
		"hex3": func(sum []byte) string { return hex.EncodeToString(sum[:2])[:3] },
		"hex4": func(sum []byte) string { return hex.EncodeToString(sum[:2]) },
	}[scheme]
	return func(prefix, id string) string {
		sum := sha256.Sum256([]byte(id))
		return prefix + ".deliveries." + token(sum[:])
	}, token != nil
}

// What a scheme of record subjects costs nats-server (issue 21's
// records: one subject per event, or a bounded number of buckets): its
// CPU and heap for N events' records (two sinks each) written from one
// connection, then the time to read one event's records among them,
// warm (1,000 random ids in a row) and cold (the first read after a
// restart, as a lookup minutes after the last one finds the server). The
// server runs as a process of its own. A measurement, run by hand, once
// per scheme:
//
//	go test ./internal/lookup -run TestRecordSubjectScheme -records.events 1000000 -records.scheme key -v
func TestRecordSubjectScheme(t *testing.T) {
	n := *schemeEvents
	if n == 0 {
		t.Skip("a long measurement: go test ./internal/lookup -run TestRecordSubjectScheme -records.events 1000000 -records.scheme key -v")
	}
	subject, ok := recordSubject(*schemeName)
	if !ok {
		t.Fatalf("-records.scheme %q: key, hex3 or hex4", *schemeName)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Minute)
	defer cancel()
	srv := startServerProc(t, t.TempDir())
	nc, js := srv.connect(t)
	streams := config.Default().Streams
	topo := topology.New(streams)
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	stream, prefix := topo.DeliveriesStream(), topo.Prefix()
	ids := make([]string, n)
	subjs := make([]string, n)
	for i := range n {
		ids[i] = fmt.Sprintf("evt-%08d-0b6f3c2e-8d1a-4f7e-9c55-2a61d0e4b7f3", i)
		subjs[i] = subject(prefix, ids[i])
	}
	heap0, cpu0 := srv.heap(t), srv.cpu(t)
	start := time.Now()
	for i := range n {
		for _, sink := range []string{"chabok", "metrix"} {
			r := deliveries.Record{EventID: ids[i], Type: "track", Name: "order_paid", Sink: sink, State: deliveries.Delivered,
				At: time.Now().UTC(), Attempts: 1, Latency: time.Millisecond, Stream: topo.EventsStream(), Seq: uint64(i + 1), Origin: uint64(i + 1)}
			// Acknowledged, a window at a time: plain publishes this fast
			// overrun the stream's ingest queue and some are dropped.
			if _, err := js.PublishAsync(subjs[i], r.AppendJSON(nil)); err != nil {
				t.Fatal(err)
			}
		}
		if i%1000 == 999 {
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				t.Fatal("publishes not acknowledged within a minute")
			}
		}
	}
	testenv.Eventually(t, 5*time.Minute, "every record stored", func() bool {
		s, err := js.Stream(ctx, stream)
		return err == nil && s.CachedInfo().State.Msgs == uint64(2*n)
	})
	stored := time.Since(start)
	cpu1, heap1 := srv.cpu(t), srv.heap(t)
	t.Logf("%s: %d records of %d events stored in %s; nats-server CPU %.2f s per million records, heap %d MiB more (%d MiB in all)",
		*schemeName, 2*n, n, stored.Round(time.Second), (cpu1-cpu0).Seconds()*1e6/float64(2*n), (heap1-heap0)>>20, heap1>>20)

	read := func(i int) time.Duration {
		t0 := time.Now()
		got := 0
		err := jsread.Scan(ctx, nc, stream, subjs[i], jsread.From{}, 0, "delivery records", func(m jsread.Msg) bool {
			var r deliveries.Record
			if err := json.Unmarshal(m.Data, &r); err != nil {
				t.Fatal(err)
			}
			if r.EventID == ids[i] {
				got++
			}
			return true
		})
		took := time.Since(t0)
		if err != nil || got != 2 {
			t.Fatalf("reading %s: %d records, %v", ids[i], got, err)
		}
		return took
	}
	var took []time.Duration
	cpu2 := srv.cpu(t)
	for range 1000 {
		took = append(took, read(rand.IntN(n)))
	}
	cpu3 := srv.cpu(t)
	slices.Sort(took)
	t.Logf("%s: warm reads among %d events: p50 %s, p99 %s, max %s; nats-server CPU %.2f ms a read (1,000 random ids)", *schemeName, n,
		took[len(took)/2].Round(10*time.Microsecond), took[len(took)*99/100].Round(10*time.Microsecond), took[len(took)-1].Round(10*time.Microsecond),
		(cpu3-cpu2).Seconds()*1e3/1000)

	nc.Close()
	// A read loads the per-subject state of every block it looks into,
	// which the server keeps for 2 minutes: the heap before and after
	// the first read after a restart.
	var cold []time.Duration
	var before, after []uint64
	for range 3 {
		srv.stop(t)
		srv = startServerProc(t, srv.dir)
		nc, _ = srv.connect(t)
		before = append(before, srv.heap(t)>>20)
		cold = append(cold, read(rand.IntN(n)))
		after = append(after, srv.heap(t)>>20)
		nc.Close()
	}
	t.Logf("%s: cold reads (the first after a restart): %v; heap (MiB) after a restart %v, after its first read %v", *schemeName, cold, before, after)

	// What stays: the server drops a block's per-subject state 2 minutes
	// after its last use, not its stream-wide subject index. Idle is
	// what is measured here, so this waits it out.
	if *schemeIdle {
		idle := time.NewTimer(150 * time.Second)
		defer idle.Stop()
		select {
		case <-idle.C:
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
		t.Logf("%s: heap after 150 s with no read or write: %d MiB", *schemeName, srv.heap(t)>>20)
	}
}

// serverProc is nats-server (file storage) in a process of its own: this
// test binary in its server role.
type serverProc struct {
	cmd       *exec.Cmd
	dir       string
	url, prof string
}

func startServerProc(t *testing.T, dir string) *serverProc {
	t.Helper()
	addr, prof := testenv.FreeAddr(t), testenv.FreeAddr(t)
	_, port, _ := strings.Cut(addr, ":")
	_, pport, _ := strings.Cut(prof, ":")
	cmd := exec.Command(os.Args[0], "-a", "127.0.0.1", "-p", port, "-js", "-sd", dir, "-profile", pport)
	cmd.Env = append(os.Environ(), serverRoleEnv+"=nats-server")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &serverProc{cmd: cmd, dir: dir, url: "nats://" + addr, prof: "http://" + prof}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return p
}

func (p *serverProc) connect(t *testing.T) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	var nc *nats.Conn
	testenv.Eventually(t, time.Minute, "nats-server accepts connections", func() bool {
		var err error
		nc, err = nats.Connect(p.url)
		return err == nil
	})
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4000)) // a window of 1,000 events is 2,000 publishes
	if err != nil {
		t.Fatal(err)
	}
	// Recovering a stream takes a moment after the server accepts
	// connections.
	testenv.Eventually(t, time.Minute, "JetStream ready", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := js.AccountInfo(ctx)
		return err == nil
	})
	return nc, js
}

func (p *serverProc) stop(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatal("nats-server not stopped within a minute")
	}
}

// cpu is the server's CPU time so far, user plus system (/proc, in
// USER_HZ = 100 ticks a second).
func (p *serverProc) cpu(t *testing.T) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %v %v", p.cmd.Process.Pid, err1, err2)
	}
	return time.Duration(u+s) * time.Second / 100
}

// heap is the server's live heap after a collection (its runtime's
// HeapAlloc, from its profiling port).
func (p *serverProc) heap(t *testing.T) uint64 {
	t.Helper()
	resp, err := http.Get(p.prof + "/debug/pprof/heap?debug=1&gc=1")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no HeapAlloc in the server's heap profile: %v", sc.Err())
	return 0
}
