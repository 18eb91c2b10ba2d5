// Command bench is Chapar's load harness. It starts everything on loopback
// (an embedded JetStream server and the vendor emulator in this process, the
// dispatcher as a child process so its CPU and memory are its own), and
// measures in one run:
//
//   - end-to-end throughput (publish → vendor 2xx → ack) with 1 and with 3
//     sinks per event, at several sink concurrencies;
//   - delivery latency p50/p99/max at a fixed offered rate below saturation;
//   - peak RSS and CPU-seconds per 1,000 events of the dispatcher process;
//   - isolation: a healthy sink's rate while another sink's vendor is down;
//   - the two ceilings: JetStream alone (publish + pull + ack, no HTTP) and
//     HTTP alone (the sinks' client against the emulator, no JetStream).
//
// Usage: go run ./cmd/bench [-events 4000] [-concurrency 4,16,64] [-out docs/benchmarks.md]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/embedded"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

type harness struct {
	events     int
	dispatcher string
	work       string
	emu        *emulator.Emulator
	emuURL     map[string]string
	out        io.Writer
}

func main() {
	events := flag.Int("events", 4000, "events per throughput scenario")
	conc := flag.String("concurrency", "4,16,64", "sink concurrencies to measure")
	rate := flag.Int("rate", 200, "offered rate (events/s) for the latency scenario")
	bin := flag.String("dispatcher", "", "dispatcher binary (default: go build ./cmd/dispatcher)")
	outFile := flag.String("out", "", "also write the report (markdown) here")
	flag.Parse()
	if err := run(*events, *conc, *rate, *bin, *outFile); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(events int, concList string, rate int, bin, outFile string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	work, err := os.MkdirTemp("", "chapar-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if bin == "" {
		bin = filepath.Join(work, "dispatcher")
		build := exec.Command("go", "build", "-o", bin, "./cmd/dispatcher")
		build.Stderr = os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build the dispatcher (run from the repository root): %w", err)
		}
	}
	var concs []int
	for _, c := range strings.Split(concList, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 {
			return fmt.Errorf("-concurrency: %q", c)
		}
		concs = append(concs, n)
	}
	emu := emulator.New(emulator.DemoConfig())
	ls, err := emu.Serve(ctx, map[string]string{
		emulator.Chabok: "127.0.0.1:0", emulator.MetrixS2S: "127.0.0.1:0", emulator.MetrixGateway: "127.0.0.1:0",
	})
	if err != nil {
		return err
	}
	h := &harness{events: events, dispatcher: bin, work: work, emu: emu, emuURL: map[string]string{}}
	for _, l := range ls {
		h.emuURL[l.Vendor] = l.URL
	}
	var report strings.Builder
	h.out = io.MultiWriter(os.Stdout, &report)

	fmt.Fprintf(h.out, "# Chapar benchmarks\n\nMachine: %s/%s, %d CPUs (%s), Go %s. %s.\n",
		runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), cpuModel(), runtime.Version(), time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(h.out, "Command: `go run ./cmd/bench -events %d -concurrency %s -rate %d`\n\n", events, concList, rate)
	fmt.Fprintf(h.out, "Everything runs on loopback on this one machine: JetStream (file storage) and the vendor emulator in the harness process, the dispatcher as a child process. Figures are only comparable within one run; the ratios are the point.\n\n")

	// Ceilings first, on the same machine in the same run.
	jsCeil, err := h.jetstreamCeiling(ctx)
	if err != nil {
		return err
	}
	maxConc := slices.Max(concs)
	httpCeil, err := h.httpCeiling(ctx, maxConc)
	if err != nil {
		return err
	}
	lower := min(jsCeil, httpCeil)
	fmt.Fprintf(h.out, "## Ceilings\n\n| ceiling | events/s |\n|---|---|\n")
	fmt.Fprintf(h.out, "| JetStream alone: publish + pull-consume + ack, no HTTP | %.0f |\n", jsCeil)
	fmt.Fprintf(h.out, "| HTTP alone: the Metrix gateway sink's client, %d concurrent, against the emulator, no JetStream | %.0f |\n\n", maxConc, httpCeil)

	fmt.Fprintf(h.out, "## End-to-end throughput\n\nPublish → router → per-sink queue → vendor 2xx → ack. %d events per row; a delivery is one event reaching one sink.\n\n", events)
	fmt.Fprintf(h.out, "| sinks per event | concurrency per sink | events/s | deliveries/s | vs lower ceiling | dispatcher CPU-s per 1k events | dispatcher peak RSS |\n|---|---|---|---|---|---|---|\n")
	for _, fanout := range []int{1, 3} {
		for _, c := range concs {
			r, err := h.throughput(ctx, fanout, c)
			if err != nil {
				return err
			}
			fmt.Fprintf(h.out, "| %d | %d | %.0f | %.0f | %.0f%% | %.3f | %.0f MiB |\n", fanout, c, r.eventsPerSec,
				r.eventsPerSec*float64(fanout), 100*r.eventsPerSec/lower, r.cpuPerK, r.rssMiB)
		}
	}

	lat, err := h.latency(ctx, rate, 16)
	if err != nil {
		return err
	}
	fmt.Fprintf(h.out, "\n## Latency at %d events/s offered (below saturation), 1 sink, concurrency 16\n\n", rate)
	fmt.Fprintf(h.out, "From the producer's publish call to the vendor receiving the request, %d events.\n\n", lat.n)
	fmt.Fprintf(h.out, "| p50 | p99 | max |\n|---|---|---|\n| %s | %s | %s |\n", lat.p50, lat.p99, lat.max)

	iso, err := h.isolation(ctx, 16)
	if err != nil {
		return err
	}
	fmt.Fprintf(h.out, "\n## Isolation: one vendor down\n\nTwo sinks per event (Chabok and the Metrix gateway), concurrency 16. Chabok's delivery rate with the gateway answering 503 throughout, against its rate with both up.\n\n")
	fmt.Fprintf(h.out, "| Chabok, both vendors up | Chabok, gateway down | ratio |\n|---|---|---|\n| %.0f/s | %.0f/s | %.2f |\n", iso.up, iso.down, iso.down/iso.up)

	if outFile != "" {
		if err := os.WriteFile(outFile, []byte(report.String()), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// stack is one scenario's NATS server and dispatcher child process.
type stack struct {
	srv  *server.Server
	nc   *nats.Conn
	js   jetstream.JetStream
	topo topology.Topology
	cmd  *exec.Cmd
}

// start runs a fresh JetStream server and a dispatcher child over sinks.
func (h *harness) start(ctx context.Context, name string, sinkCfg string, routes string) (*stack, error) {
	dir := filepath.Join(h.work, name)
	srv, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", DataDir: filepath.Join(dir, "nats")})
	if err != nil {
		return nil, err
	}
	cfgFile := filepath.Join(dir, "chapar.yaml")
	cfg := fmt.Sprintf("dispatcher:\n  log_level: error\n  router_concurrency: 16\nadmin:\n  listen: \"\"\n%s\nroutes:\n%s", sinkCfg, routes)
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, h.dispatcher, "run", "--config", cfgFile, "--nats-url", srv.ClientURL())
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		srv.Shutdown()
		return nil, err
	}
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	st := &stack{srv: srv, nc: nc, js: js, topo: topology.New(config.Default().Streams), cmd: cmd}
	// Wait until the dispatcher has bound its consumers.
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := js.Consumer(ctx, st.topo.EventsStream(), topology.SinkConsumer("metrix-gateway")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%s: dispatcher did not start", name)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond) // sink consumers follow the router's
	return st, nil
}

// stop ends the dispatcher (SIGTERM, graceful) and returns its CPU time and
// peak RSS.
func (st *stack) stop() (cpu time.Duration, rssMiB float64) {
	_ = st.cmd.Process.Signal(syscall.SIGTERM)
	_ = st.cmd.Wait()
	if ru, ok := st.cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		rssMiB = float64(ru.Maxrss) / 1024 // Linux reports KiB
	}
	st.nc.Close()
	st.srv.Shutdown()
	st.srv.WaitForShutdown()
	return cpu, rssMiB
}

func (h *harness) sinkYAML(names []string, concurrency int) string {
	var b strings.Builder
	b.WriteString("sinks:\n")
	for _, n := range names {
		switch n {
		case emulator.Chabok:
			fmt.Fprintf(&b, "  - {name: chabok, vendor: chabok, concurrency: %d, base_url: %q, settings: {app_id: demoapp, access_token: demo-chabok-token}}\n", concurrency, h.emuURL[n])
		case emulator.MetrixS2S:
			fmt.Fprintf(&b, "  - {name: metrix-s2s, vendor: metrix-s2s, concurrency: %d, base_url: %q, events: {order_paid: aewqd}, settings: {app_id: demoapp, dev_key: demo-dev-key}}\n", concurrency, h.emuURL[n])
		case emulator.MetrixGateway:
			fmt.Fprintf(&b, "  - {name: metrix-gateway, vendor: metrix-gateway, concurrency: %d, base_url: %q, events: {order_paid: aewqd}, settings: {app_id: demoapp, api_key: demo-api-key},\n", concurrency, h.emuURL[n])
			b.WriteString("     breaker: {failure_threshold: 5, open_timeout: 1s}, retry: {initial_interval: 1s, max_interval: 5s}}\n")
		}
	}
	return b.String()
}

func routeYAML(names []string) string {
	return fmt.Sprintf("  - sinks: [%s]\n", strings.Join(names, ", "))
}

func sinkName(vendor string) string {
	if vendor == emulator.Chabok {
		return "chabok"
	}
	return vendor
}

func benchEvent(i int) (*envelope.Envelope, error) {
	return envelope.New(envelope.TypeTrack, "bench", envelope.Track{
		Name:       "order_paid",
		Properties: map[string]any{"orderId": fmt.Sprintf("A-%d", i), "items": 3, "firstOrder": true},
		User: envelope.User{ID: fmt.Sprintf("user-%d", i), ChabokInstallationID: "inst-1", MetrixUserID: "mx-1",
			MetrixSessionID: "sess-1", AdvertisingID: "ad-1"},
	})
}

// publishAll publishes n events asynchronously (bounded in flight), then
// waits for every ack.
func publishAll(ctx context.Context, js jetstream.JetStream, topo topology.Topology, n int, sent func(id string)) error {
	for i := range n {
		env, err := benchEvent(i)
		if err != nil {
			return err
		}
		raw, err := env.Marshal()
		if err != nil {
			return err
		}
		if sent != nil {
			sent(env.ID)
		}
		if _, err := js.PublishAsync(topo.EventSubject(env.Type), raw, jetstream.WithMsgID(env.ID)); err != nil {
			return err
		}
	}
	select {
	case <-js.PublishAsyncComplete():
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("publish acks did not arrive in 2m")
	}
}

// waitFor polls until the vendors together accepted want requests.
func (h *harness) waitFor(vendors []string, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		got := 0
		for _, v := range vendors {
			got += h.emu.Vendor(v).Count(200)
		}
		if got >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d deliveries after %s", got, want, timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (h *harness) reset() {
	for _, v := range h.emu.Names() {
		if vendor := h.emu.Vendor(v); vendor != nil {
			vendor.Reset()
		}
	}
}

type throughputResult struct {
	eventsPerSec float64
	cpuPerK      float64
	rssMiB       float64
}

func (h *harness) throughput(ctx context.Context, fanout, concurrency int) (throughputResult, error) {
	h.reset()
	vendors := []string{emulator.MetrixGateway, emulator.Chabok, emulator.MetrixS2S}[:fanout]
	names := make([]string, len(vendors))
	for i, v := range vendors {
		names[i] = sinkName(v)
	}
	st, err := h.start(ctx, fmt.Sprintf("tp-%d-%d", fanout, concurrency), h.sinkYAML(vendors, concurrency), routeYAML(names))
	if err != nil {
		return throughputResult{}, err
	}
	start := time.Now()
	if err := publishAll(ctx, st.js, st.topo, h.events, nil); err != nil {
		return throughputResult{}, err
	}
	err = h.waitFor(vendors, h.events*fanout, 5*time.Minute)
	took := time.Since(start)
	cpu, rss := st.stop()
	if err != nil {
		return throughputResult{}, err
	}
	return throughputResult{
		eventsPerSec: float64(h.events) / took.Seconds(),
		cpuPerK:      cpu.Seconds() / float64(h.events) * 1000,
		rssMiB:       rss,
	}, nil
}

type latencyResult struct {
	n             int
	p50, p99, max time.Duration
}

func (h *harness) latency(ctx context.Context, rate, concurrency int) (latencyResult, error) {
	h.reset()
	vendor := emulator.MetrixGateway
	st, err := h.start(ctx, "latency", h.sinkYAML([]string{vendor}, concurrency), routeYAML([]string{sinkName(vendor)}))
	if err != nil {
		return latencyResult{}, err
	}
	defer st.stop()
	n := min(h.events, rate*10)
	sentAt := make(map[string]time.Time, n)
	var mu sync.Mutex
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for i := range n {
		<-tick.C
		env, err := benchEvent(i)
		if err != nil {
			return latencyResult{}, err
		}
		raw, _ := env.Marshal()
		mu.Lock()
		sentAt[env.ID] = time.Now()
		mu.Unlock()
		if _, err := st.js.Publish(ctx, st.topo.EventSubject(env.Type), raw, jetstream.WithMsgID(env.ID)); err != nil {
			return latencyResult{}, err
		}
	}
	if err := h.waitFor([]string{vendor}, n, time.Minute); err != nil {
		return latencyResult{}, err
	}
	var lats []time.Duration
	for _, r := range h.emu.Vendor(vendor).Requests() {
		for _, id := range gatewayMessageIDs(r.Body) {
			if t, ok := sentAt[id]; ok {
				lats = append(lats, r.At.Sub(t))
			}
		}
	}
	if len(lats) == 0 {
		return latencyResult{}, fmt.Errorf("no latencies recorded")
	}
	slices.Sort(lats)
	pct := func(p float64) time.Duration {
		return lats[min(len(lats)-1, int(p*float64(len(lats))))].Round(10 * time.Microsecond)
	}
	return latencyResult{n: len(lats), p50: pct(0.50), p99: pct(0.99), max: lats[len(lats)-1].Round(10 * time.Microsecond)}, nil
}

type isolationResult struct{ up, down float64 }

func (h *harness) isolation(ctx context.Context, concurrency int) (isolationResult, error) {
	vendors := []string{emulator.Chabok, emulator.MetrixGateway}
	names := []string{"chabok", "metrix-gateway"}
	measure := func(name string, gatewayDown bool) (float64, error) {
		h.reset()
		if gatewayDown {
			h.emu.Vendor(emulator.MetrixGateway).SetFault(emulator.Fault{Status: 503})
			defer h.emu.Vendor(emulator.MetrixGateway).ClearFault()
		}
		st, err := h.start(ctx, name, h.sinkYAML(vendors, concurrency), routeYAML(names))
		if err != nil {
			return 0, err
		}
		defer st.stop()
		start := time.Now()
		if err := publishAll(ctx, st.js, st.topo, h.events, nil); err != nil {
			return 0, err
		}
		if err := h.waitFor([]string{emulator.Chabok}, h.events, 5*time.Minute); err != nil {
			return 0, err
		}
		return float64(h.events) / time.Since(start).Seconds(), nil
	}
	up, err := measure("iso-up", false)
	if err != nil {
		return isolationResult{}, err
	}
	down, err := measure("iso-down", true)
	if err != nil {
		return isolationResult{}, err
	}
	return isolationResult{up: up, down: down}, nil
}

// jetstreamCeiling publishes and consumes the same number of events through
// one stream with no HTTP: the most Chapar's queueing could allow.
func (h *harness) jetstreamCeiling(ctx context.Context) (float64, error) {
	srv, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", DataDir: filepath.Join(h.work, "ceiling-js")})
	if err != nil {
		return 0, err
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		return 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return 0, err
	}
	topo := topology.New(config.Default().Streams)
	if err := topo.Ensure(ctx, js); err != nil {
		return 0, err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, topo.EventsStream(), jetstream.ConsumerConfig{
		Durable: "ceiling", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1000})
	if err != nil {
		return 0, err
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() {
		iter, err := cons.Messages(jetstream.PullMaxMessages(64))
		if err != nil {
			done <- err
			return
		}
		defer iter.Stop()
		for range h.events {
			msg, err := iter.Next()
			if err != nil {
				done <- err
				return
			}
			if err := msg.DoubleAck(ctx); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	if err := publishAll(ctx, js, topo, h.events, nil); err != nil {
		return 0, err
	}
	if err := <-done; err != nil {
		return 0, err
	}
	return float64(h.events) / time.Since(start).Seconds(), nil
}

// httpCeiling sends the same number of events through a sink straight to
// the emulator with the sink's own client: the most the vendor side allows.
func (h *harness) httpCeiling(ctx context.Context, concurrency int) (float64, error) {
	h.reset()
	cfg, err := config.Parse([]byte(h.sinkYAML([]string{emulator.MetrixGateway}, concurrency)), func(string) (string, bool) { return "", false })
	if err != nil {
		return 0, err
	}
	built, err := sinks.Build(cfg.Sinks)
	if err != nil {
		return 0, err
	}
	sink := built["metrix-gateway"]
	jobs := make(chan *sinks.Delivery)
	errs := make(chan error, concurrency)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for d := range jobs {
				if err := sink.Deliver(ctx, d); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	start := time.Now()
	for i := range h.events {
		env, err := benchEvent(i)
		if err != nil {
			return 0, err
		}
		ev, err := env.Decode()
		if err != nil {
			return 0, err
		}
		select {
		case jobs <- &sinks.Delivery{Event: ev, ReceivedAt: time.Now()}:
		case err := <-errs:
			return 0, err
		}
	}
	close(jobs)
	wg.Wait()
	select {
	case err := <-errs:
		return 0, err
	default:
	}
	return float64(h.events) / time.Since(start).Seconds(), nil
}

// gatewayMessageIDs returns the envelope ids a Metrix gateway request
// carried (its action and revenue messages).
func gatewayMessageIDs(body []byte) []string {
	var req struct {
		Messages []struct{ Type, ID string }
	}
	if json.Unmarshal(body, &req) != nil {
		return nil
	}
	var out []string
	for _, m := range req.Messages {
		if m.Type != "user" {
			out = append(out, m.ID)
		}
	}
	return out
}
