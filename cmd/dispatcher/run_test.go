package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/buildinfo"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// `dispatcher run` as an operator starts it: a config file with a secret
// from the environment, the admin port, the Kenar webhook; then SIGTERM.
func TestRunServesDeliversAndStops(t *testing.T) {
	e := testenv.New(t)
	admin, hook := testenv.FreeAddr(t), testenv.FreeAddr(t)
	t.Setenv("TEST_CHABOK_TOKEN", "demo-chabok-token")
	cfg := fmt.Sprintf(`
admin: {listen: %q}
webhook: {listen: %q, identification_key: hook-key}
dispatcher: {log_level: debug, shutdown_grace: 2s}
sinks:
  - name: chabok
    vendor: chabok
    base_url: %s
    settings: {app_id: demoapp, access_token: "${TEST_CHABOK_TOKEN}"}
routes:
  - sinks: [chabok]
`, admin, hook, e.URL[emulator.Chabok])
	file := filepath.Join(t.TempDir(), "chapar.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var errOut bytes.Buffer
	go func() {
		done <- runCommand(ctx, []string{"run", "--config", file, "--nats-url", e.Server.ClientURL()}, io.Discard, &errOut)
	}()
	testenv.Eventually(t, 10*time.Second, "ready", func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if err := runCommand(ctx, []string{"health", "--addr", admin}, io.Discard, io.Discard); err != nil {
		t.Errorf("health: %v", err)
	}
	e.Publish(testenv.Track(t, "order_paid", "u1"))
	req, _ := http.NewRequest(http.MethodPost, "http://"+hook+"/webhooks/kenar", strings.NewReader(`{"type":"POST_UPDATE","metadata":{"user_id":"k1"}}`))
	req.Header.Set("Authorization", "hook-key")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("webhook: %d", resp.StatusCode)
	}
	vendor := e.Emu.Vendor(emulator.Chabok)
	testenv.Eventually(t, 10*time.Second, "both events delivered", func() bool { return vendor.Count(200) == 2 })
	// The vendor's 200 comes before Chapar's ack and the metric that
	// follows it: wait for the metric, do not race it.
	testenv.Eventually(t, 10*time.Second, "metrics count both deliveries", func() bool {
		resp, err := http.Get("http://" + admin + "/metrics")
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return strings.Contains(string(body), `chapar_deliveries_total{sink="chabok"} 2`)
	})
	build := buildinfo.Read()
	if _, body := httpGet(t, "http://"+admin+"/metrics"); !strings.Contains(body,
		fmt.Sprintf(`chapar_build_info{go_version=%q,version=%q} 1`, build.GoVersion, build.Version)) {
		t.Error("/metrics lacks chapar_build_info")
	}
	stop() // SIGTERM
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, errOut.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop within its grace period")
	}
	if err := runCommand(context.Background(), []string{"health", "--addr", admin}, io.Discard, io.Discard); err == nil {
		t.Error("health passes for a stopped dispatcher")
	}
	logs := errOut.String()
	if !strings.Contains(logs, `"msg":"chapar dispatcher starting","version":"`+build.Version+`"`) {
		t.Errorf("no startup line with the version %s:\n%s", build.Version, logs)
	}
	if !strings.Contains(logs, "dispatcher consuming") {
		t.Fatalf("no debug logs captured, so the secret check below would prove nothing:\n%s", logs)
	}
	if strings.Contains(logs, "demo-chabok-token") || strings.Contains(logs, "hook-key") {
		t.Error("a secret reached the log")
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// `dispatcher run` fails at start, with the reason, on what would
// otherwise fail later or quietly: a port that is taken, a secret that is
// not set, a base_url that cannot be sent to, a stream that cannot be
// created; and it never prints a NATS password.
func TestRunFailsFast(t *testing.T) {
	e := testenv.New(t)
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	// A stream that holds the subjects a Chapar stream needs.
	if _, err := e.JS.CreateStream(context.Background(), jetstream.StreamConfig{Name: "SQUATTER", Subjects: []string{"clash.events.>"}}); err != nil {
		t.Fatal(err)
	}
	sink := `
sinks:
  - name: chabok
    vendor: chabok
    base_url: %s
    settings: {app_id: demoapp, access_token: "%s"}
routes:
  - sinks: [chabok]
`
	good := fmt.Sprintf(sink, e.URL[emulator.Chabok], "token")
	url := e.Server.ClientURL()
	for _, tc := range []struct {
		name, cfg string
		args      []string
		want      string
	}{
		{"admin port taken", fmt.Sprintf("admin: {listen: %q}\n", taken.Addr()) + good, nil,
			"admin.listen: cannot listen on " + taken.Addr().String()},
		{"webhook port taken", fmt.Sprintf("admin: {listen: \"\"}\nwebhook: {listen: %q, identification_key: k}\n", taken.Addr()) + good, nil,
			"kenar_webhook.listen: cannot listen on " + taken.Addr().String()},
		{"secret not set", "admin: {listen: \"\"}\n" + fmt.Sprintf(sink, e.URL[emulator.Chabok], "${RUN_TEST_UNSET_TOKEN}"), nil,
			"sinks[0].settings.access_token: environment variable RUN_TEST_UNSET_TOKEN is not set"},
		{"base_url", "admin: {listen: \"\"}\n" + fmt.Sprintf(sink, "ftp://example.com", "token"), nil,
			`sinks[0].base_url: "ftp://example.com" has scheme "ftp"`},
		{"stream cannot be created", "admin: {listen: \"\"}\nstreams: {subject_prefix: clash}\n" + good, nil,
			"overlap"},
		{"NATS password redacted", "admin: {listen: \"\"}\n" + good, []string{"--server", "nats://chapar:hunter2@127.0.0.1:1"},
			"connect to NATS at nats://chapar:***@127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "chapar.yaml")
			if err := os.WriteFile(file, []byte(tc.cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			args := append([]string{"run", "--config", file, "--server", url}, tc.args...)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			var out, errOut bytes.Buffer
			start := time.Now()
			code := mainCode(ctx, args, nil, &out, &errOut)
			if code == 0 || ctx.Err() != nil {
				t.Fatalf("exit %d after %s (want a failure at start)\n%s", code, time.Since(start), errOut.String())
			}
			last := lastLine(errOut.String())
			if !strings.HasPrefix(last, "dispatcher: ") || !strings.Contains(last, tc.want) {
				t.Errorf("the last line does not give the reason %q:\n%s", tc.want, errOut.String())
			}
			if strings.Contains(errOut.String(), "hunter2") {
				t.Error("the NATS password was printed")
			}
		})
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// The listeners dispatcher run serves are bounded: a client that sends its
// headers a byte at a time is cut off (at ReadHeaderTimeout, shortened
// here), on the webhook and on the admin port alike.
func TestRunServersCutSlowClients(t *testing.T) {
	e := testenv.New(t)
	saved := runLimits
	runLimits.ReadHeaderTimeout, runLimits.ReadTimeout = 200*time.Millisecond, 400*time.Millisecond
	t.Cleanup(func() { runLimits = saved })
	admin, hook := testenv.FreeAddr(t), testenv.FreeAddr(t)
	cfg := fmt.Sprintf(`
admin: {listen: %q}
webhook: {listen: %q, identification_key: hook-key}
sinks:
  - {name: chabok, vendor: chabok, base_url: %s, settings: {app_id: demoapp, access_token: t}}
routes:
  - sinks: [chabok]
`, admin, hook, e.URL[emulator.Chabok])
	file := filepath.Join(t.TempDir(), "chapar.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runCommand(ctx, []string{"run", "--config", file, "--server", e.Server.ClientURL()}, io.Discard, io.Discard)
	}()
	defer func() { stop(); <-done }()
	testenv.Eventually(t, 10*time.Second, "ready", func() bool {
		code, _, err := tryGet("http://" + admin + "/readyz")
		return err == nil && code == 200
	})
	for _, addr := range []string{admin, hook} {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		closed := make(chan struct{})
		go func() { _, _ = io.ReadAll(c); close(closed) }()
		start := time.Now()
		head := "POST /webhooks/kenar HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("s", 100)
	dribble:
		for i := range len(head) {
			select {
			case <-closed:
				break dribble
			case <-time.After(50 * time.Millisecond):
				_, _ = c.Write([]byte{head[i]})
			}
		}
		select {
		case <-closed:
		case <-time.After(2 * time.Second):
		}
		if took := time.Since(start); took > 2*time.Second {
			t.Errorf("%s held a slow client for %s", addr, took)
		}
		c.Close()
	}
}

func tryGet(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), nil
}
