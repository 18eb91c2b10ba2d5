package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// Stream ages JetStream refuses: a max_age shorter than
// streams.duplicate_window (a 5m max_age for a test deployment, with the
// 10m default window), or a negative one. config check said ok, and
// dispatcher run never started: its bind took the server's refusal
// (an API error 500, err_code 10052) for a cluster not ready yet and
// waited for ever, logging "JetStream not ready; waiting", /readyz 503,
// naming no key. Each must be refused by config check, and by run at
// once, naming the key.
func TestStreamAgesTheServerRefusesAreRefusedAtStart(t *testing.T) {
	e := testenv.New(t)
	sink := fmt.Sprintf(`
admin: {listen: ""}
sinks:
  - {name: chabok, vendor: chabok, base_url: %s, settings: {app_id: demoapp, access_token: tok}}
routes:
  - sinks: [chabok]
`, e.URL[emulator.Chabok])
	for i, tc := range []struct{ streams, key string }{
		{"max_age: 5m", "streams.max_age"},
		{"max_age: -1h", "streams.max_age"},
		{"dead_letter_max_age: 1m", "streams.dead_letter_max_age"},
		{"dead_letter_max_age: -24h", "streams.dead_letter_max_age"},
	} {
		t.Run(tc.streams, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "chapar.yaml")
			cfg := fmt.Sprintf("streams: {subject_prefix: ages%d, %s}\n", i, tc.streams) + sink
			if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out, _ := runNoPanic(t, []string{"config", "check", file})
			if code != 2 || !strings.Contains(out, tc.key+": ") {
				t.Errorf("config check: exit %d, want 2 naming %s:\n%s", code, tc.key, out)
			}
			code, _, errOut := runNoPanic(t, []string{"run", "--config", file, "--server", e.Server.ClientURL()})
			if code == 0 || !strings.Contains(lastLine(errOut), tc.key+": ") {
				t.Errorf("run: exit %d, its last line does not name %s:\n%s", code, tc.key, lastLine(errOut))
			}
		})
	}
}

// A huge ops_events.buffer (a typo's extra zeros) passed config check, and
// dispatcher run with ops_events.enabled died at start, "fatal error:
// runtime: out of memory" with no key named: the queue is allocated whole
// (opsevents.New). It must be refused by config check and by run, naming
// the key. Run in a child process: the crash cannot be recovered.
func TestHugeOpsEventsBufferIsRefusedAtStart(t *testing.T) {
	if args := os.Getenv("CHAPAR_OPS_REVIEW_CHILD"); args != "" {
		os.Exit(mainCode(context.Background(), strings.Split(args, "\n"), nil, os.Stdout, os.Stderr))
	}
	e := testenv.New(t)
	file := filepath.Join(t.TempDir(), "chapar.yaml")
	cfg := fmt.Sprintf(`
admin: {listen: ""}
ops_events: {enabled: true, buffer: 2000000000000}
sinks:
  - {name: chabok, vendor: chabok, base_url: %s, settings: {app_id: demoapp, access_token: tok}}
routes:
  - sinks: [chabok]
`, e.URL[emulator.Chabok])
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	const key = "ops_events.buffer: "
	code, out, _ := runNoPanic(t, []string{"config", "check", file})
	if code != 2 || !strings.Contains(out, key) {
		t.Errorf("config check: exit %d, want 2 naming ops_events.buffer:\n%s", code, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestHugeOpsEventsBufferIsRefusedAtStart$")
	cmd.Env = append(os.Environ(), "CHAPAR_OPS_REVIEW_CHILD="+strings.Join([]string{"run", "--config", file, "--server", e.Server.ClientURL()}, "\n"))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	switch {
	case ctx.Err() != nil:
		t.Errorf("run started serving (stopped at the test's deadline)")
	case strings.Contains(stderr.String(), "fatal error") || strings.Contains(stderr.String(), "panic"):
		t.Errorf("run crashed (%v): %s", err, firstLines(stderr.String(), 3))
	case err == nil || !strings.Contains(lastLine(stderr.String()), key):
		t.Errorf("run: %v; its last line does not name ops_events.buffer: %s", err, lastLine(stderr.String()))
	}
}

func firstLines(s string, n int) string {
	lines := strings.SplitN(s, "\n", n+1)
	return strings.Join(lines[:min(n, len(lines))], "\n")
}

// retry.multiplier or retry.jitter written .nan (YAML's NaN) passed
// config check ("must be at least 1" and "in [0, 1)" are false for
// NaN), and the backoff became -292 years: after its first retry a
// failing event was retried at once, every attempt back to back, and
// dead-lettered in a few seconds instead of backing off. Each must be
// refused at start, naming the key.
func TestNaNRetryPolicyIsRefusedAtStart(t *testing.T) {
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.Chabok)
	vendor.SetFault(emulator.Fault{Status: 503})
	for _, tc := range []struct{ retry, key string }{
		{"multiplier: .nan", "sinks[0].retry.multiplier: "},
		{"jitter: .nan", "sinks[0].retry.jitter: "},
	} {
		t.Run(tc.retry, func(t *testing.T) {
			vendor.Reset()
			vendor.SetFault(emulator.Fault{Status: 503})
			admin := testenv.FreeAddr(t)
			cfg := fmt.Sprintf(`
admin: {listen: %q}
sinks:
  - name: chabok
    vendor: chabok
    base_url: %s
    settings: {app_id: demoapp, access_token: tok}
    retry: {initial_interval: 1s, max_interval: 1m, max_attempts: 8, %s}
    breaker: {failure_threshold: 1000}
routes:
  - sinks: [chabok]
`, admin, e.URL[emulator.Chabok], tc.retry)
			file := filepath.Join(t.TempDir(), "chapar.yaml")
			if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out, _ := runNoPanic(t, []string{"config", "check", file})
			if code == 2 && strings.Contains(out, tc.key) {
				return // refused, naming the key
			}
			t.Errorf("config check: exit %d, want 2 naming %s:\n%s", code, tc.key, out)
			// What run does with it: 8 attempts, which a backoff from 1s
			// doubling spreads over two minutes.
			startRun(t, e, admin, cfg)
			published := time.Now()
			e.Publish(testenv.Track(t, "order_paid", "u-nan"))
			testenv.Eventually(t, 30*time.Second, "the event dead-lettered", func() bool { return vendor.Count(503) >= 8 && e.Idle("chabok") })
			t.Errorf("8 attempts of a failing event took %s (backoff from 1s: over a minute)", time.Since(published).Round(time.Millisecond))
		})
	}
}

// dispatcher events show and events list against a NATS whose Chapar
// streams do not exist (no dispatcher has run with this config's
// subject_prefix yet, or the prefix is mistyped) answered at once with
// "no answer to a read of the delivery records within 5s": a timeout that
// did not happen, which sends the operator after a slow server. The dlq
// commands say the stream is missing and ask whether a dispatcher has run.
func TestEventsCommandsSayTheStreamIsMissing(t *testing.T) {
	e := testenv.New(t)
	file := filepath.Join(t.TempDir(), "chapar.yaml")
	if err := os.WriteFile(file, []byte("streams: {subject_prefix: nodeploy}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"events", "show", "01a24c1c-f2e4-762f-8de4-6de0f1d52088"}, {"events", "list"}} {
		start := time.Now()
		code, _, errOut := runNoPanic(t, append(args, "--config", file, "--server", e.Server.ClientURL()))
		took := time.Since(start)
		last := lastLine(errOut)
		if code != 1 || strings.Contains(last, "within 5s") || !strings.Contains(last, "NODEPLOY_DELIVERIES") {
			t.Errorf("%v: exit %d after %s: %s\n(want exit 1 naming the missing stream NODEPLOY_DELIVERIES, no timeout that did not happen)",
				args, code, took.Round(time.Millisecond), last)
		}
	}
}
