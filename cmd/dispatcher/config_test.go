package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/internal/emulator"
)

// One pass reports every error of the file: unresolved references, wrong
// types, unknown keys, invalid values and the vendors' settings, each with
// its key, and exits 2.
func TestConfigCheckReportsEveryError(t *testing.T) {
	file := filepath.Join(t.TempDir(), "bad.yaml")
	bad := `# a comment, so that the file's lines differ from the re-encoded text's

nats:
  url: nats://127.0.0.1:4222
streams:
  replicas: 2
dispatcher:
  ack_wait: 30
  concurency: 3
kenar_webhook:
  listen: ":8080"
  identification_key: ${CHECK_TEST_UNSET_KEY}
sinks:
  - name: chabok
    vendor: chabok
    settings: {app_id: a, access_token: "${CHECK_TEST_UNSET_TOKEN}"}
  - name: Bad Name
    vendor: mixpanel
  - name: gw
    vendor: metrix-gateway
    timeout: -1s
    settings: {app_id: a}
routes:
  - sinks: [chabok, nope]
    types: [chapar.click]
`
	if err := os.WriteFile(file, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"kenar_webhook.identification_key": "CHECK_TEST_UNSET_KEY is not set",
		"sinks[0].settings.access_token":   "CHECK_TEST_UNSET_TOKEN is not set",
		"dispatcher.ack_wait":              "line 8: cannot unmarshal",
		"dispatcher.concurency":            "line 9: field concurency not found",
		"streams.replicas":                 "is 2; use 1",
		"sinks[1].name":                    `"Bad Name" must be`,
		"sinks[1].vendor":                  `"mixpanel" is not a vendor`,
		"sinks[2].timeout":                 "is -1s",
		"sinks[2].settings.api_key":        "is required",
		"routes[0].sinks[1]":               `"nope" is not a configured sink`,
		"routes[0].types[0]":               `"chapar.click" is not an event type`,
	}
	var out, errOut bytes.Buffer
	if code := mainCode(context.Background(), []string{"config", "check", "--json", file}, nil, &out, &errOut); code != 2 {
		t.Fatalf("exit %d, want 2\n%s", code, errOut.String())
	}
	var got struct {
		OK     bool `json:"ok"`
		Errors []struct{ Key, Message string }
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil || got.OK {
		t.Fatalf("--json: %v\n%s", err, out.String())
	}
	seen := map[string]int{}
	for _, e := range got.Errors {
		seen[e.Key]++
		if w, ok := want[e.Key]; !ok {
			t.Errorf("unexpected error %s: %s", e.Key, e.Message)
		} else if !strings.Contains(e.Message, w) {
			t.Errorf("%s: %q does not say %q", e.Key, e.Message, w)
		}
	}
	for k := range want {
		if seen[k] != 1 {
			t.Errorf("%s reported %d times, want once", k, seen[k])
		}
	}

	// The text form: one line per error, the file and key first.
	out.Reset()
	if code := mainCode(context.Background(), []string{"config", "check", file}, nil, &out, &errOut); code != 2 {
		t.Fatalf("exit %d, want 2", code)
	}
	if n := strings.Count(out.String(), "\n"); n != len(want) {
		t.Errorf("%d lines for %d errors:\n%s", n, len(want), out.String())
	}
	if !strings.Contains(out.String(), file+": streams.replicas: is 2") {
		t.Errorf("text form:\n%s", out.String())
	}
}

func TestConfigCheckAcceptsShippedConfigs(t *testing.T) {
	for _, k := range []string{"CHABOK_ACCESS_TOKEN", "KENAR_API_KEY", "KENAR_IDENTIFICATION_KEY", "METRIX_API_KEY", "METRIX_APP_ID",
		"METRIX_DEV_KEY"} {
		t.Setenv(k, "x")
	}
	// What the demo exports: each emulated vendor's address and demo
	// credentials.
	for k, v := range emulator.DemoEnv() {
		t.Setenv(k, v)
	}
	for _, name := range emulator.New(emulator.DemoConfig()).Names() {
		t.Setenv("EMULATOR_"+strings.ToUpper(strings.ReplaceAll(name, "-", "_")), "http://127.0.0.1:9101")
	}
	for file, want := range map[string]string{
		"../../configs/demo.yaml": "demo.yaml: ok\n",
		// The one secret that is a file is not there outside a container.
		"../../configs/chapar.example.yaml": "chapar.example.yaml: sinks[3].settings.access_token: cannot read secret file",
	} {
		var out, errOut bytes.Buffer
		code := mainCode(context.Background(), []string{"config", "check", file}, nil, &out, &errOut)
		if !strings.Contains(out.String(), want) || strings.Count(out.String(), "\n") != 1 {
			t.Errorf("%s: exit %d\n%s%s", file, code, out.String(), errOut.String())
		}
	}
}

// A secret never reaches config check's output, even from a vendor's
// settings error.
func TestConfigCheckDoesNotEchoSecrets(t *testing.T) {
	t.Setenv("CHECK_TEST_SECRET", "hunter2-Very-Secret")
	file := filepath.Join(t.TempDir(), "leak.yaml")
	cfg := `
sinks:
  - name: s2s
    vendor: metrix-s2s
    settings: {app_id: a, dev_key: k, event_time_unit: "${CHECK_TEST_SECRET}"}
    base_url: "${CHECK_TEST_SECRET}"
`
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if code := mainCode(context.Background(), []string{"config", "check", file}, nil, &out, &errOut); code != 2 {
		t.Fatalf("exit %d\n%s%s", code, out.String(), errOut.String())
	}
	if strings.Contains(out.String()+errOut.String(), "hunter2") {
		t.Errorf("the secret was printed:\n%s%s", out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "event_time_unit") || !strings.Contains(out.String(), "${CHECK_TEST_SECRET}") {
		t.Errorf("the errors do not name the key and the reference:\n%s", out.String())
	}
}
