package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// README's "Run it for real", as a newcomer follows it: configs/local.yaml
// against the emulator's vendors, examples/events.json published with the
// publisher. Every example event reaches every sink it is routed to, and
// none is dead-lettered.
func TestReadmeExampleEventsAreDelivered(t *testing.T) {
	readme := readFile(t, "../../README.md")
	events := readFile(t, "../../examples/events.json")
	for _, want := range []string{
		"bin/dispatcher emulator &", "bin/dispatcher run --config configs/local.yaml &",
		"bin/publisher --file examples/events.json", "```json\n" + events + "```\n",
	} {
		if !strings.Contains(readme, want) {
			t.Errorf("README's \"Run it for real\" no longer shows %q: update it or this test", want)
		}
	}

	// The config runs as it is: no variable to set, each base_url the
	// address `dispatcher emulator` serves that vendor on by default.
	cfg, err := config.Parse([]byte(readFile(t, "../../configs/local.yaml")), func(k string) (string, bool) {
		t.Errorf("configs/local.yaml reads the environment variable %s; it must run as is", k)
		return "", false
	})
	if err != nil {
		t.Fatalf("configs/local.yaml: %v", err)
	}
	listen := map[string]string{}
	for _, h := range emulator.Handlers() {
		listen[h.Name] = h.Listen
	}
	e := testenv.New(t)
	for i, s := range cfg.Sinks {
		if want := emulator.BaseURL(s.Vendor, listen[s.Vendor]); s.BaseURL != want {
			t.Errorf("configs/local.yaml: sink %s base_url %s, but `dispatcher emulator` serves %s at %s", s.Name, s.BaseURL, s.Vendor, want)
		}
		// The same emulator, on this test's free ports.
		cfg.Sinks[i].BaseURL = e.URL[s.Vendor]
	}
	d := e.Start(cfg.Sinks, cfg.Routes)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pub := exec.CommandContext(ctx, "go", "run", "../publisher", "--file", "../../examples/events.json", "--server", e.Server.ClientURL())
	if out, err := pub.CombinedOutput(); err != nil || !strings.Contains(string(out), "4 published, 0 failed") {
		t.Fatalf("publisher --file examples/events.json: %v\n%s", err, out)
	}

	// Where each example goes, by configs/local.yaml's routes.
	want := map[string]int{"chabok": 2, "metrix-s2s": 2, "metrix-gateway": 3, "webhook": 1, "kenar": 1}
	var sinkNames []string
	for _, s := range cfg.Sinks {
		sinkNames = append(sinkNames, s.Name)
	}
	// Settled: all four taken, and no sink has one pending, in flight or
	// waiting for a retry.
	testenv.Eventually(t, 30*time.Second, "every example settled", func() bool {
		received, _, _ := d.Tally.Snapshot()
		return received == 4 && e.Idle(sinkNames...)
	})
	received, unrouted, counts := d.Tally.Snapshot()
	if received != 4 || unrouted != 0 {
		t.Errorf("%d received, %d unrouted; want the 4 examples, each routed", received, unrouted)
	}
	for _, c := range counts {
		if c.Delivered != want[c.Sink] || len(c.DeadLettered) != 0 {
			t.Errorf("sink %s: %d delivered, dead-lettered %v; want %d delivered, none dead-lettered", c.Sink, c.Delivered, c.DeadLettered, want[c.Sink])
		}
	}
	// What the vendors saw: each request accepted.
	for vendor, n := range map[string]int{emulator.Chabok: 2, emulator.MetrixS2S: 2, emulator.MetrixGateway: 3, emulator.Kenar: 1} {
		if v := e.Emu.Vendor(vendor); v.Count(200) != n || v.Count(0) != n {
			t.Errorf("%s accepted %d of %d requests, want %d of %d", vendor, v.Count(200), v.Count(0), n, n)
		}
	}
	// README tells the newcomer to check with dlq stats.
	var out bytes.Buffer
	if err := runCommand(ctx, []string{"dlq", "stats", "--json", "--server", e.Server.ClientURL()}, &out, os.Stderr); err != nil {
		t.Fatal(err)
	}
	var stats struct{ Total int }
	if err := json.Unmarshal(out.Bytes(), &stats); err != nil || stats.Total != 0 {
		t.Errorf("dlq stats --json: %v %s; want 0 dead letters", err, out.String())
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}
