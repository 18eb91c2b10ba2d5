// Command bench measures Chapar against the alternatives in one run, on one
// machine, against the same vendor emulator:
//
//   - Chapar as users run it: the dispatcher binary built from this
//     repository, `dispatcher run --config <generated file>`;
//   - Watermill: watermill-nats's JetStream pull subscriber on a durable
//     consumer, a router handler that POSTs to the vendor (bench/peers);
//   - lean: a hand-written nats.go/jetstream consumer, one POST and one Ack
//     per message with N workers (bench/peers): the practical limit;
//   - and the machine's ceilings, lean's two halves apart (ceilings.go):
//     JetStream pull + ack without HTTP, the vendor's HTTP without NATS.
//     Every system's throughput is reported as a share of the lower.
//
// Each system runs alone, as its own process, against a fresh nats-server
// process with a fresh stream. The vendor (the Chabok emulator) must have
// every event exactly once, or the run fails. Reported: deliveries/s,
// CPU-seconds per 1,000 events of the system and of nats-server, the
// system's peak RSS, and publish → vendor latency at a fixed offered rate.
//
// Usage (from the repository root):
//
//	go run ./cmd/bench                      # every system, every scenario
//	go run ./cmd/bench -quick               # smoke test: 300 events each
//	go run ./cmd/bench -systems chapar,lean -scenarios backlog16,rate
//
// The peers are built from bench/peers, a module of their own, so Chapar's
// module does not depend on Watermill.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/chapar-dev/chapar/internal/embedded"
)

// raceBuild is set when the bench itself is built with -race (its test
// under go test -race), so the dispatcher is built the same way.
var raceBuild bool

type options struct {
	quick     bool
	systems   []string
	scenarios []string
	events    int
	keep      bool
	// waitIdle waits for idle CPUs before each measurement and measures
	// again (up to three times) one another workload disturbed.
	waitIdle bool
	// chaparEnv is the environment of the chapar-env system: the
	// dispatcher as built, run with these variables (variant.go).
	chaparEnv []string
	progress  io.Writer
}

func main() {
	if isNATSHelper() {
		os.Exit(embedded.ServerMain(os.Args[1:]))
	}
	quick := flag.Bool("quick", false, "smoke test: 300 events per scenario")
	sys := flag.String("systems", strings.Join(defaultSystems(), ","), "systems to measure")
	scs := flag.String("scenarios", strings.Join(scenarioNames, ","), "scenarios to run")
	events := flag.Int("events", 0, "events per scenario (default 20000; 10000 in rate, 50000 in rate5k; 300 with -quick)")
	keep := flag.Bool("keep", false, "keep the work directory: generated config, logs, JetStream data")
	waitIdle := flag.Bool("wait-idle", true, "before each measurement wait (up to 2m) for idle CPUs; measure again, up to 3 times, when another workload disturbed it")
	chaparEnv := flag.String("chapar-env", "", "space-separated VAR=value settings for the system chapar-env: the same dispatcher, run with them (e.g. GOGC=100), measured beside chapar")
	flag.Parse()
	o := options{quick: *quick, systems: list(*sys), scenarios: list(*scs), events: *events, keep: *keep, waitIdle: *waitIdle,
		chaparEnv: strings.Fields(*chaparEnv), progress: os.Stderr}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	loadBefore := loadAverage()
	if loadBefore > 0.5 {
		fmt.Fprintf(os.Stderr, "bench: the 1-minute load average is %.2f before the run: something else is using the CPUs, and the figures will show it\n", loadBefore)
	}
	results, err := runBench(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
	scenarioList, _ := scenarios(o.scenarios, o.quick, o.events)
	command := strings.Join(append([]string{"go run ./cmd/bench"}, os.Args[1:]...), " ")
	writeReport(os.Stdout, command, loadBefore, scenarioList, results)
	failed := 0
	for _, r := range results {
		if r.err != nil {
			failed++
		}
	}
	if failed > 0 {
		fmt.Fprintf(os.Stderr, "bench: %d of %d runs FAILED (see above)\n", failed, len(results))
		os.Exit(1)
	}
}

func list(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}
