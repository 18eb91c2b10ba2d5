package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// Issue 21: `dispatcher sinks redeliver`: the dry run prints the count and
// a sample and sends nothing; the job re-sends the window to the one sink,
// says so, and a job cut short (here by --limit) says how to go on; a
// sink the config does not name is refused with the ones it does.
func TestSinksRedeliver(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	routes := []config.Route{{Sinks: []string{"hook", "chabok"}}}
	e.Start([]config.Sink{e.Sink("hook", emulator.Webhook, nil, nil), e.Sink("chabok", emulator.Chabok, nil, nil)}, routes)
	cfg := map[string]any{
		"sinks": []map[string]any{
			{"name": "hook", "vendor": "webhook", "base_url": e.URL[emulator.Webhook], "settings": emulator.DemoSettings(emulator.Webhook),
				"rate_limit": map[string]any{"per_second": 500, "burst": 5}},
			{"name": "chabok", "vendor": "chabok", "base_url": e.URL[emulator.Chabok], "settings": emulator.DemoSettings(emulator.Chabok)},
		},
		"routes": []map[string]any{{"sinks": []string{"hook", "chabok"}}},
	}
	raw, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "chapar.yaml")
	if err := os.WriteFile(file, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	since := time.Now()
	for i := range 4 {
		e.Publish(testenv.Track(t, "signup", "user-"+string(rune('a'+i))))
	}
	until := time.Now()
	testenv.Eventually(t, 20*time.Second, "first deliveries", func() bool {
		return e.Emu.Vendor(emulator.Webhook).Count(200) == 4 && e.Idle("hook", "chabok")
	})
	chabok := e.Emu.Vendor(emulator.Chabok).Count(200)
	cli := func(from string, args ...string) (string, string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		args = append([]string{"sinks", "redeliver", "--sink", "hook", "--config", file, "--nats-url", e.Server.ClientURL(),
			"--since", from, "--until", until.Format(time.RFC3339Nano)}, args...)
		err := runCommand(ctx, args, &out, &errOut)
		return out.String(), errOut.String(), err
	}

	out, errOut, err := cli(since.Format(time.RFC3339Nano), "--dry-run")
	t.Logf("dry run:\n%s%s", out, errOut)
	if err != nil || !strings.Contains(out, "dry run: 4 of the 4 events stored from") || !strings.Contains(out, "a sample:") ||
		strings.Count(out, "chapar.track") != 4 {
		t.Errorf("dry run: %v\n%s", err, out)
	}

	out, errOut, err = cli(since.Format(time.RFC3339Nano), "--limit", "3")
	t.Logf("--limit 3:\n%s%s", out, errOut)
	if err != nil || !strings.Contains(out, "re-sent 3 to hook, then stopped, 3 events into the window from") ||
		!strings.Contains(errOut, "at most 500 a second (its rate_limit)") ||
		!strings.Contains(errOut, "stopped at --limit 3 after re-sending 3; to go on: dispatcher sinks redeliver --sink hook --config "+file+" --until ") {
		t.Errorf("--limit 3: %v\n%s%s", err, out, errOut)
	}
	resume := errOut[strings.LastIndex(errOut, "--since ")+len("--since "):]
	resume = strings.TrimSpace(resume)

	var res struct {
		Matched int `json:"matched"`
		Sent    int `json:"sent"`
	}
	out, errOut, err = cli(resume)
	t.Logf("the rest:\n%s%s", out, errOut)
	if err != nil || !strings.Contains(out, "re-sent 1 of the 1 events stored from") {
		t.Errorf("the rest (--since %s): %v\n%s%s", resume, err, out, errOut)
	}
	out, errOut, err = cli(resume, "--json", "--dry-run")
	if err != nil || json.Unmarshal([]byte(out), &res) != nil || res.Matched != 1 || res.Sent != 0 {
		t.Errorf("the rest (--since %s): %v\n%s%s", resume, err, out, errOut)
	}
	testenv.Eventually(t, 20*time.Second, "the redelivery", func() bool {
		return e.Emu.Vendor(emulator.Webhook).Count(200) == 8 && e.Idle("hook", "chabok")
	})
	if got := e.Emu.Vendor(emulator.Chabok).Count(200); got != chabok {
		t.Errorf("chabok got %d requests during hook's redelivery", got-chabok)
	}

	// Ctrl-C part-way: the job, paced at one every 2 s, is stopped once
	// the vendor has the first re-send; it says how far it got and how to
	// go on.
	jctx, stop := context.WithCancel(ctx)
	defer stop()
	done := make(chan error, 1)
	var jout, jerr bytes.Buffer
	go func() {
		done <- runCommand(jctx, []string{"sinks", "redeliver", "--sink", "hook", "--config", file, "--nats-url", e.Server.ClientURL(),
			"--since", since.Format(time.RFC3339Nano), "--until", until.Format(time.RFC3339Nano), "--rate", "0.5"}, &jout, &jerr)
	}()
	testenv.Eventually(t, 20*time.Second, "the first re-send at the vendor", func() bool {
		return e.Emu.Vendor(emulator.Webhook).Count(200) >= 9
	})
	stop()
	select {
	case err = <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the interrupted job did not stop")
	}
	t.Logf("interrupted:\n%s%s", jout.String(), jerr.String())
	if !errors.Is(err, context.Canceled) || !strings.Contains(jerr.String(), "at most 0.5 a second (--rate)") ||
		!regexp.MustCompile(`stopped after re-sending [123]; to go on: dispatcher sinks redeliver --sink hook .* --since \S+`).MatchString(jerr.String()) {
		t.Errorf("interrupted: %v\n%s%s", err, jout.String(), jerr.String())
	}

	var o, eo bytes.Buffer
	err = runCommand(ctx, []string{"sinks", "redeliver", "--sink", "hok", "--config", file, "--nats-url", e.Server.ClientURL(), "--since", "1h"}, &o, &eo)
	if err == nil || !strings.Contains(err.Error(), `no sink "hok"`) || !strings.Contains(err.Error(), "hook, chabok") {
		t.Errorf("unknown sink: %v", err)
	}
}
