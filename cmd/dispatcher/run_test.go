package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

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
