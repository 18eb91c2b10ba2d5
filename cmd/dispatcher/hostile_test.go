package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// chaparSeries counts the chapar_ series of a /metrics body (one line per
// series, histogram buckets included).
func chaparSeries(body string) map[string]bool {
	out := map[string]bool{}
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "chapar_") {
			out[l[:strings.LastIndexByte(l, ' ')]] = true
		}
	}
	return out
}

// Issue 22: what a producer chooses (destinations, types, sources), or a
// caller of the Kenar webhook (notification types), must not mint metric
// series. A dispatcher takes one event of each kind (so every
// series they touch exists), then hundreds of events with distinct
// well-formed destinations, types and sources; a real /metrics scrape has
// fewer than 50 series more (before: one chapar_dead_letters_total series
// per unknown destination, several hundred).
func TestProducersCannotMintMetricSeries(t *testing.T) {
	e := testenv.New(t)
	admin, hook := testenv.FreeAddr(t), testenv.FreeAddr(t)
	startRun(t, e, admin, fmt.Sprintf(`
admin: {listen: %q}
kenar_webhook: {listen: %q, identification_key: hook-key}
sinks:
  - {name: chabok, vendor: chabok, base_url: %s, settings: {app_id: demoapp, access_token: demo-chabok-token}}
routes:
  - sinks: [chabok]
`, admin, hook, e.URL[emulator.Chabok]))

	publish := func(i int) {
		// A Kenar notification of a type of its own: an event named
		// kenar.probe_type_<i>, delivered.
		req, _ := http.NewRequest(http.MethodPost, "http://"+hook+"/webhooks/kenar",
			strings.NewReader(fmt.Sprintf(`{"type":"PROBE_TYPE_%d","metadata":{"user_id":"k%d"}}`, i, i)))
		req.Header.Set("Authorization", "hook-key")
		if code := do(t, req); code != http.StatusOK {
			t.Fatalf("kenar webhook: %d", code)
		}
		// A destination no dispatcher runs: dead-lettered as unknown_destination.
		e.Publish(testenv.Track(t, "order_paid", "u1", envelope.WithDestinations(fmt.Sprintf("probe-ghost-%d", i))))
		// A well-formed type Chapar does not know: an invalid envelope.
		typ := fmt.Sprintf("chapar.probe%d", i)
		e.PublishRaw(e.Topo.EventSubjectFor(typ, ""), "", fmt.Appendf(nil,
			`{"specversion":"1.0","id":"probe-type-%d","source":"probe","type":%q,"data":{}}`, i, typ))
		// A valid event from a source of its own, with a name of its own: delivered.
		ev := testenv.Track(t, fmt.Sprintf("probe_name_%d", i), "u1")
		ev.Source = fmt.Sprintf("probe-source-%d", i)
		e.Publish(ev)
	}
	settled := func(n int) {
		t.Helper()
		testenv.Eventually(t, 30*time.Second, fmt.Sprintf("%d deliveries counted and chabok idle", n), func() bool {
			_, body, err := tryGet("http://" + admin + "/metrics")
			return err == nil && strings.Contains(body, fmt.Sprintf(`chapar_deliveries_total{sink="chabok"} %d`+"\n", n)) && e.Idle("chabok")
		})
	}
	publish(0)
	settled(2)
	_, body := httpGet(t, "http://"+admin+"/metrics")
	before := chaparSeries(body)

	const n = 300
	for i := 1; i <= n; i++ {
		publish(i)
	}
	settled(2 * (n + 1))
	_, body = httpGet(t, "http://"+admin+"/metrics")
	var added []string
	for s := range chaparSeries(body) {
		if !before[s] {
			added = append(added, s)
		}
	}
	t.Logf("%d events added %d chapar_ series", 4*n, len(added))
	if len(added) >= 50 {
		t.Errorf("%d events with distinct destinations, types, sources and Kenar notification types added %d chapar_ series (want < 50), such as:\n%s",
			4*n, len(added), strings.Join(added[:min(len(added), 5)], "\n"))
	}
	if strings.Contains(body, "probe-") {
		t.Errorf("a producer's value became a label:\n%s", grep(body, "probe-"))
	}
}

func grep(body, s string) string {
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// slowClients opens n connections to addr that each send a request's
// headers, then its body a byte at a time, holding the connection until
// the server cuts it (ReadTimeout) or the test ends.
func slowClients(t *testing.T, addr, path string, n int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	for range n {
		wg.Go(func() {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return
			}
			defer c.Close()
			go func() { <-ctx.Done(); c.Close() }()
			head := "POST " + path + " HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
			if _, err := c.Write([]byte(head)); err != nil {
				return
			}
			for {
				select {
				case <-ctx.Done():
					return
				case <-time.After(200 * time.Millisecond):
					if _, err := c.Write([]byte(" ")); err != nil {
						return
					}
				}
			}
		})
	}
}

// Issue 22: clients that send their bodies slowly hold every connection
// the webhook and admin listeners serve, until ReadTimeout cuts them; the
// health probes meanwhile must keep answering, or an orchestrator restarts
// a healthy dispatcher. They do, on admin.probe_listen, a listener of
// their own. The listeners' cap is lowered here so that a hundred slow
// clients do what 2,000 do against the default 512.
func TestProbesAnswerUnderSlowClients(t *testing.T) {
	e := testenv.New(t)
	saved := runLimits
	runLimits.MaxConns = 20
	t.Cleanup(func() { runLimits = saved })
	admin, hook, probes := testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)
	startRun(t, e, probes, fmt.Sprintf(`
admin: {listen: %q, probe_listen: %q}
kenar_webhook: {listen: %q, identification_key: hook-key}
sinks:
  - {name: chabok, vendor: chabok, base_url: %s, settings: {app_id: demoapp, access_token: demo-chabok-token}}
routes:
  - sinks: [chabok]
`, admin, probes, hook, e.URL[emulator.Chabok]))

	slowClients(t, admin, "/metrics", 2*runLimits.MaxConns)
	slowClients(t, hook, "/webhooks/kenar", 2*runLimits.MaxConns)
	quick := &http.Client{Timeout: time.Second}
	// The abuse works: the admin listener's own /healthz no longer answers.
	testenv.Eventually(t, 10*time.Second, "the admin listener saturated", func() bool {
		resp, err := (&http.Client{Timeout: 300 * time.Millisecond}).Get("http://" + admin + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err != nil
	})
	var slowest time.Duration
	probed := 0
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
		for _, path := range []string{"/healthz", "/readyz"} {
			start := time.Now()
			resp, err := quick.Get("http://" + probes + path)
			if err != nil {
				t.Fatalf("%s on the probe listener under abuse: %v", path, err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s on the probe listener under abuse: %d", path, resp.StatusCode)
			}
			took := time.Since(start)
			if took > time.Second {
				t.Fatalf("%s took %s under abuse", path, took)
			}
			slowest, probed = max(slowest, took), probed+1
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("%d probes under abuse, the slowest in %s", probed, slowest)
	// The probe listener serves the probes only: not /metrics, not the console.
	if resp, err := quick.Get("http://" + probes + "/metrics"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("/metrics on the probe listener: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

// do sends req and returns its status.
func do(t *testing.T, req *http.Request) int {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}
