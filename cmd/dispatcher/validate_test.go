package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// One validator: for a config that cannot run, dispatcher run refuses it
// before serving with every error config check reports, in the same
// words, and config check reports everything run would refuse; neither
// panics nor prints a secret a ${…} reference brought in.
func TestRunAndConfigCheckReportTheSameErrors(t *testing.T) {
	const secret = "hunter2-Very-Secret"
	t.Setenv("VALIDATE_TEST_SECRET", secret)
	os.Unsetenv("CHAPAR_ADMIN_TOKEN") // t.Setenv restores it
	t.Setenv("CHAPAR_ADMIN_TOKEN", "")
	os.Unsetenv("CHAPAR_ADMIN_TOKEN")
	dir := t.TempDir()
	shortToken := filepath.Join(dir, "short-token")
	if err := os.WriteFile(shortToken, []byte("abc123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Each case's config, over an embedded JetStream in the test's
	// directory; a config that wrongly passes starts serving, and the
	// test's deadline stops it.
	nats := fmt.Sprintf("nats: {embedded: {listen: \"127.0.0.1:0\", data_dir: %q}}\n", filepath.Join(dir, "js"))
	sink := "sinks:\n  - {name: hook, vendor: webhook, settings: {url: \"http://127.0.0.1:1/x\"}}\n"
	tests := []struct {
		name, cfg string
		want      []string // key: message, each reported by both
	}{
		{"the file of every error", everyErrorConfig, nil}, // want: what config check says, 11 errors
		{"admin.listen not a port", "admin: {listen: \"127.0.0.1:notaport\"}\n" + sink,
			[]string{`admin.listen: "127.0.0.1:notaport" is not a host:port`}},
		{"console beyond loopback without a token", "admin: {listen: \"0.0.0.0:0\", console: {enabled: true}}\n" + sink,
			[]string{"admin.console.enabled: the console is served beyond loopback"}},
		{"token file too short", fmt.Sprintf("admin: {listen: \"127.0.0.1:0\", token_file: %q, console: {enabled: true}}\n", shortToken) + sink,
			[]string{"admin.token_file: the admin token is 6 bytes; use at least 16"}},
		{"webhook.path with a brace", "webhook: {listen: \"127.0.0.1:0\", path: \"/hooks/{kenar\", identification_key: \"${VALIDATE_TEST_SECRET}\"}\n" + sink,
			[]string{`kenar_webhook.path: "/hooks/{kenar" is not a path`}},
		{"webhook.path with a space", "webhook: {listen: \"127.0.0.1:0\", path: \"/web hook\", identification_key: k}\n" + sink,
			[]string{`kenar_webhook.path: "/web hook" is not a path`}},
		{"webhook.path without a slash", "webhook: {listen: \"127.0.0.1:0\", path: webhooks/kenar, identification_key: k}\n" + sink,
			[]string{`kenar_webhook.path: "webhooks/kenar" must start with /`}},
		{"log level a secret", "dispatcher: {log_level: \"${VALIDATE_TEST_SECRET}\"}\n" + sink,
			[]string{`dispatcher.log_level: "${VALIDATE_TEST_SECRET}" is not a level`}},
		{"admin.listen a secret, and a vendor's setting", "admin: {listen: \"${VALIDATE_TEST_SECRET}\"}\nsinks:\n  - {name: hook, vendor: webhook}\n",
			[]string{`admin.listen: "${VALIDATE_TEST_SECRET}" is not a host:port`, "sinks[0].settings.url: is required"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "chapar.yaml")
			cfg := tc.cfg
			if !strings.Contains(cfg, "nats:") {
				cfg = nats + cfg
			}
			if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			checked, checkOut, _ := runNoPanic(t, []string{"config", "check", "--json", file})
			var report struct {
				OK     bool
				Errors []configProblem
			}
			if err := json.Unmarshal([]byte(checkOut), &report); err != nil || report.OK {
				t.Fatalf("config check says ok or no JSON (exit %d): %v\n%s", checked, err, checkOut)
			}
			var problems []string
			for _, p := range report.Errors {
				problems = append(problems, p.Key+": "+p.Message)
			}
			if tc.want == nil && len(problems) != 11 {
				t.Errorf("config check reports %d errors, want 11:\n%s", len(problems), strings.Join(problems, "\n"))
			}
			for _, w := range tc.want {
				if !strings.Contains(strings.Join(problems, "\n"), w) {
					t.Errorf("config check does not say %q:\n%s", w, strings.Join(problems, "\n"))
				}
			}
			ran, _, runOut := runNoPanic(t, []string{"run", "--config", file})
			if ran == 0 {
				t.Fatalf("run started, or stopped with exit 0:\n%s", runOut)
			}
			for _, p := range problems {
				if !strings.Contains(runOut, "dispatcher: "+file+": "+p+"\n") {
					t.Errorf("run does not report, in the same words, %q:\n%s", p, runOut)
				}
			}
			if n := strings.Count(runOut, "\n"); n != len(problems) {
				t.Errorf("run printed %d lines for %d errors:\n%s", n, len(problems), runOut)
			}
			if strings.Contains(checkOut+runOut, secret) {
				t.Errorf("a secret was printed:\n%s\n%s", checkOut, runOut)
			}
		})
	}
}

// runNoPanic runs a command line as main does, with a deadline, and
// returns its exit code, stdout and stderr; a panic fails the test instead
// of crashing it.
func runNoPanic(t *testing.T, args []string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var out, errOut bytes.Buffer
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("%v panicked: %v", args, r)
				code = -1
			}
		}()
		code = mainCode(ctx, args, nil, &out, &errOut)
	}()
	if ctx.Err() != nil {
		t.Errorf("%v ran until its deadline", args)
	}
	return code, out.String(), errOut.String()
}

// everyErrorConfig has eleven errors: the config's own and the vendors'.
const everyErrorConfig = `
streams:
  replicas: 2
dispatcher:
  ack_wait: 30
  concurency: 3
webhook:
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

// A connection error says where the server URL came from: --server,
// $NATS_URL, a --context or the file's nats.url (it said "(nats.url)"
// whatever the source).
func TestConnectErrorNamesWhereTheURLCameFrom(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	if err := os.MkdirAll(filepath.Join(dir, "nats", "context"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "nats", "context", "far.json"), []byte(`{"url": "nats://127.0.0.1:3"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "chapar.yaml")
	if err := os.WriteFile(file, []byte("nats: {url: \"nats://127.0.0.1:1\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		natsURL string // $NATS_URL; "" unset
		args    []string
		want    string
	}{
		{"the file", "", nil, "connect to NATS at nats://127.0.0.1:1 (nats.url)"},
		{"the flag", "", []string{"--server", "nats://127.0.0.1:2"}, "connect to NATS at nats://127.0.0.1:2 (--server)"},
		{"the variable", "nats://127.0.0.1:4", nil, "connect to NATS at nats://127.0.0.1:4 ($NATS_URL)"},
		{"the flag over the variable", "nats://127.0.0.1:4", []string{"--server", "nats://127.0.0.1:2"}, "nats://127.0.0.1:2 (--server)"},
		{"a context", "", []string{"--context", "far"}, "connect to NATS at nats://127.0.0.1:3 (--context far)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NATS_URL", tc.natsURL)
			if tc.natsURL == "" {
				os.Unsetenv("NATS_URL")
			}
			code, _, stderr := runNoPanic(t, append([]string{"dlq", "stats", "--config", file}, tc.args...))
			if code != 1 || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr does not say %q:\n%s", code, tc.want, stderr)
			}
		})
	}
}

// A base_url whose query carries something credential-like is a warning,
// by config check and in run's log, naming the parameter, not its value.
func TestBaseURLCredentialWarningWithoutTheValue(t *testing.T) {
	const value = "Zk9-query-secret"
	file := filepath.Join(t.TempDir(), "chapar.yaml")
	cfg := "admin: {listen: \"\"}\nsinks:\n  - {name: hook, vendor: webhook, base_url: \"http://127.0.0.1:1/?api_key=" + value +
		"\", settings: {url: \"http://127.0.0.1:1/x?api_key=" + value + "\"}}\n"
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	const want = "sinks[0].base_url: its query string has api_key, which reads as a credential"
	code, stdout, stderr := runNoPanic(t, []string{"config", "check", file})
	if code != 0 || !strings.Contains(stdout, "ok") || !strings.Contains(stderr, file+": warning: "+want) {
		t.Errorf("config check: exit %d\n%s%s", code, stdout, stderr)
	}
	// run logs it at start (before it connects, here to nothing).
	code, _, stderr = runNoPanic(t, []string{"run", "--config", file, "--server", "nats://127.0.0.1:1"})
	if code != 1 || !strings.Contains(stderr, `"level":"warn"`) || !strings.Contains(stderr, want) {
		t.Errorf("run: exit %d, no warning in the log:\n%s", code, stderr)
	}
	if strings.Contains(stdout+stderr, value) {
		t.Errorf("the value was printed:\n%s", stdout+stderr)
	}
}
