package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

const consoleToken = "console-admin-token-3f9a1c77e2"

// chabokSecret is the sink's access token: the emulator's, which it checks.
var chabokSecret = emulator.DemoSettings(emulator.Chabok)["access_token"].(string)

// findChromium is Debian's chromium (which .ci/run installs), or
// $CHAPAR_CHROMIUM; the browser tests skip, saying so, without one.
func findChromium(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHAPAR_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("no chromium on PATH (nor $CHAPAR_CHROMIUM): the console's browser tests need it; apt-get install chromium (.ci/run does)")
	return ""
}

// consoleDispatcher runs `dispatcher run` as an operator would, with the
// console enabled, the admin token in the environment and a chabok sink
// whose access token comes from the environment too; it returns the
// console's base URL.
func consoleDispatcher(t *testing.T, e *testenv.Env) string {
	t.Helper()
	admin := testenv.FreeAddr(t)
	t.Setenv(config.AdminTokenEnv, consoleToken)
	t.Setenv("TEST_CHABOK_TOKEN", chabokSecret)
	cfg := fmt.Sprintf(`
admin: {listen: %q, console: {enabled: true}}
dispatcher: {shutdown_grace: 2s}
sinks:
  - name: chabok
    vendor: chabok
    base_url: %s
    settings: {app_id: demoapp, access_token: "${TEST_CHABOK_TOKEN}"}
    retry: {initial_interval: 50ms, max_interval: 200ms, max_attempts: 1000, max_elapsed: 10m}
    breaker: {failure_threshold: 2, open_timeout: 500ms}
routes:
  - sinks: [chabok]
`, admin, e.URL[emulator.Chabok])
	startRun(t, e, admin, cfg)
	return "http://" + admin
}

// startRun runs `dispatcher run` with this config until the test ends, and
// waits until its admin listener says ready.
func startRun(t *testing.T, e *testenv.Env, admin, cfg string) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "chapar.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- runCommand(ctx, []string{"run", "--config", file, "--nats-url", e.Server.ClientURL()}, io.Discard, io.Discard)
	}()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("run did not stop")
		}
	})
	testenv.Eventually(t, 20*time.Second, "the dispatcher ready", func() bool {
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
}

// browser starts one headless Chromium for the test, in a fresh profile.
func browser(t *testing.T, exe string) context.Context {
	t.Helper()
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(exe),
		chromedp.Flag("headless", true),
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 860),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	bctx, cancelBrowser := chromedp.NewContext(actx)
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	// Start it now, so a broken install fails here with its error.
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return bctx
}

// step runs browser actions with a deadline: every wait in the browser is
// bounded.
func step(t *testing.T, bctx context.Context, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	read(t, bctx, what, chromedp.Steps(actions...))
}

// read runs one browser action for its value, with a deadline.
func read[T any](t *testing.T, bctx context.Context, what string, a chromedp.Action[T]) T {
	t.Helper()
	ctx, cancel := context.WithTimeout(bctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		dctx, cancel := context.WithTimeout(bctx, 5*time.Second)
		defer cancel()
		html, _ := chromedp.Run(dctx, chromedp.OuterHTML(chromedp.CSS("html")))
		t.Fatalf("%s: %v\npage:\n%s", what, err, html)
	}
	return v
}

// pageChecks are run on every page the browser shows: no secret in its
// HTML, and, with $CHAPAR_SCREENSHOTS set, a screenshot for the docs.
type pageChecks struct {
	t    *testing.T
	dir  string
	seen int
}

func newPageChecks(t *testing.T) *pageChecks {
	dir := os.Getenv("CHAPAR_SCREENSHOTS")
	if dir != "" && !filepath.IsAbs(dir) {
		dir = filepath.Join("..", "..", dir) // relative to the repository root, as docs/console.md says
	}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return &pageChecks{t: t, dir: dir}
}

func (p *pageChecks) check(bctx context.Context, shot string) {
	p.t.Helper()
	html := read(p.t, bctx, "read the page", chromedp.OuterHTML(chromedp.CSS("html")))
	assertNoSecret(p.t, "page "+shot, html)
	p.seen++
	if p.dir == "" {
		return
	}
	png := read(p.t, bctx, "screenshot "+shot, chromedp.FullScreenshot(100)) // 100: PNG
	if err := os.WriteFile(filepath.Join(p.dir, shot+".png"), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

func assertNoSecret(t *testing.T, where, body string) {
	t.Helper()
	for _, s := range []string{chabokSecret, consoleToken} {
		if strings.Contains(body, s) {
			t.Errorf("%s renders a secret (%.8s…)", where, s)
		}
	}
}

func count(t *testing.T, e *testenv.Env, f dlq.Filter) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	recs, err := dlq.NewStore(e.JS, e.Topo).List(ctx, f, 0)
	if err != nil {
		t.Fatal(err)
	}
	return len(recs)
}

// deliveredTo counts the vendor's 2xx answers to requests for a user's
// event (Chabok's body names the user's installation, not the event id;
// each test event has a user of its own).
func deliveredTo(v *emulator.Vendor, user string) int {
	return answered(v, user, func(status int) bool { return status/100 == 2 })
}

// answered counts the vendor's answers of a kind to a user's event.
func answered(v *emulator.Vendor, user string, kind func(status int) bool) int {
	n := 0
	marker := `"installationId":"inst-` + user + `"`
	for _, r := range v.Requests() {
		if kind(r.Status) && strings.Contains(string(r.Body), marker) {
			n++
		}
	}
	return n
}

// An operator's session in a real browser against `dispatcher run`: a
// vendor outage on the sinks page, dead letters filtered by vendor code,
// refusals without the token and from another origin, then a replay once
// the vendor is fixed, delivered once.
func TestConsoleInBrowser(t *testing.T) {
	exe := findChromium(t)
	started := time.Now()
	e := testenv.New(t)
	base := consoleDispatcher(t, e)
	bctx := browser(t, exe)
	pages := newPageChecks(t)
	vendor := e.Emu.Vendor(emulator.Chabok)

	// (a) An outage: Chabok answers 503; the breaker opens and the sinks
	// page (refreshed by htmx) says so with the last error. Two events
	// that the vendor will reject once it is back go out during it too,
	// so their dead letters have attempts to list: 503s, then a 400.
	vendor.SetFault(emulator.Fault{Status: 503, Code: "SERVICE_UNAVAILABLE"})
	e.Publish(testenv.Track(t, "order_paid", "u-outage"))
	var rejected, users []string
	for j := range 2 {
		env := testenv.Track(t, "order_paid", fmt.Sprintf("u-0-%d", j))
		rejected, users = append(rejected, env.ID), append(users, fmt.Sprintf("u-0-%d", j))
		e.Publish(env)
	}
	step(t, bctx, "sinks page shows the outage",
		chromedp.Navigate(base+"/console/sinks"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-sink="chabok"] span[data-breaker="open"]`)),
	)
	lastError := read(t, bctx, "last error", chromedp.Text(chromedp.CSS(`tr[data-sink="chabok"] td.last-error`)))
	if !strings.Contains(lastError, "503") || !strings.Contains(lastError, "SERVICE_UNAVAILABLE") {
		t.Errorf("last error on the sinks page: %q", lastError)
	}
	pages.check(bctx, "sinks")

	// Each of the two has had a 503 before the outage ends.
	for _, u := range users {
		testenv.Eventually(t, 20*time.Second, "a 503 for "+u, func() bool {
			return answered(vendor, u, func(s int) bool { return s == 503 }) >= 1
		})
	}
	// The outage ends (one swap, no moment without a fault): the waiting
	// retry is delivered, and the two are rejected once each.
	vendor.SetFault(emulator.Fault{Status: 400, Code: "INVALID_PARAMETERS", Match: `"installationId":"inst-u-0-`, Count: 2})
	t.Cleanup(func() {
		if t.Failed() {
			for _, r := range vendor.Requests() {
				t.Logf("vendor request %s %d %s", r.At.Format("15:04:05.000"), r.Status, r.Body)
			}
		}
	})
	testenv.Eventually(t, 20*time.Second, "the outage's event delivered", func() bool { return deliveredTo(vendor, "u-outage") == 1 })
	// The page, not reloaded, follows: htmx (embedded, allowed by the
	// CSP) refreshes the table until the breaker shows closed again.
	if kind := read(t, bctx, "htmx loaded", chromedp.Evaluate[string](`typeof htmx`)); kind != "object" {
		t.Errorf("htmx did not load on the sinks page: typeof htmx = %q", kind)
	}
	step(t, bctx, "the sinks page refreshes to the recovery",
		chromedp.WaitVisible(chromedp.CSS(`tr[data-sink="chabok"] span[data-breaker="closed"]`)),
	)

	// Dead letters of two vendor codes: the fault for the first is spent
	// before the second replaces it.
	testenv.Eventually(t, 20*time.Second, "INVALID_PARAMETERS dead letters", func() bool { return count(t, e, dlq.Filter{Code: "INVALID_PARAMETERS"}) == 2 })
	vendor.SetFault(emulator.Fault{Status: 400, Code: "EVENT_NOT_ALLOWED", Count: 1})
	e.Publish(testenv.Track(t, "order_paid", "u-1-0"))
	testenv.Eventually(t, 20*time.Second, "EVENT_NOT_ALLOWED dead letter", func() bool { return count(t, e, dlq.Filter{Code: "EVENT_NOT_ALLOWED"}) == 1 })

	// (b) Filter by vendor code in the list's form.
	rowsJS := `document.querySelectorAll('#dead-letters tr[data-seq]').length`
	step(t, bctx, "filter dead letters by vendor code",
		chromedp.Navigate(base+"/console/dead-letters"),
		chromedp.WaitVisible(chromedp.CSS(`#filter`)),
		chromedp.SetValue(chromedp.CSS(`#filter input[name="code"]`), "INVALID_PARAMETERS"),
		chromedp.Submit(chromedp.CSS(`#filter`)),
		chromedp.WaitVisible(chromedp.CSS(`#replay-purge`)),
	)
	rows := read(t, bctx, "count the rows", chromedp.Evaluate[int](rowsJS))
	listed := read(t, bctx, "read the list", chromedp.Text(chromedp.CSS(`#dead-letters`)))
	listURL := read(t, bctx, "the list's URL", chromedp.Location())
	if rows != 2 || !strings.Contains(listed, rejected[0]) || !strings.Contains(listed, rejected[1]) || strings.Contains(listed, "EVENT_NOT_ALLOWED") {
		t.Errorf("filtered by code: %d rows:\n%s", rows, listed)
	}
	pages.check(bctx, "dead-letters")

	// One dead letter's page: its envelope and every attempt.
	step(t, bctx, "open one dead letter",
		chromedp.Click(chromedp.CSS(`#dead-letters tr[data-seq] a`)),
		chromedp.WaitVisible(chromedp.CSS(`#envelope`)),
	)
	envelopeText := read(t, bctx, "read the envelope", chromedp.Text(chromedp.CSS(`#envelope`)))
	// The list is oldest first, and the two were dead-lettered concurrently:
	// the first row is either.
	if !(strings.Contains(envelopeText, rejected[0]) || strings.Contains(envelopeText, rejected[1])) || !strings.Contains(envelopeText, `"order_paid"`) {
		t.Errorf("envelope on the dead letter's page:\n%s", envelopeText)
	}
	attempts := read(t, bctx, "read the attempts", chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll('#attempts tr[data-attempt]'), r => r.innerText)`))
	if len(attempts) < 2 || !strings.Contains(attempts[len(attempts)-1], "400\tINVALID_PARAMETERS") {
		t.Errorf("attempts on the dead letter's page, want 503s then the 400:\n%s", strings.Join(attempts, "\n"))
	}
	for _, a := range attempts[:max(len(attempts)-1, 0)] {
		if !strings.Contains(a, "503\tSERVICE_UNAVAILABLE") {
			t.Errorf("attempts on the dead letter's page, want 503s then the 400:\n%s", strings.Join(attempts, "\n"))
			break
		}
	}
	pages.check(bctx, "dead-letter")

	// The dry run: count and sample, then the confirm forms.
	step(t, bctx, "dry run",
		chromedp.Navigate(listURL),
		chromedp.WaitVisible(chromedp.CSS(`#replay-purge`)),
		chromedp.Click(chromedp.CSS(`#replay-purge`)),
		chromedp.WaitVisible(chromedp.CSS(`#replay-form`)),
	)
	matched := read(t, bctx, "read the count", chromedp.AttributeValue(chromedp.CSS(`#matched`), "data-matched")).Value
	if matched != "2" {
		t.Errorf("dry run matched %q, want 2", matched)
	}
	pages.check(bctx, "replay-confirm")
	actionsURL := read(t, bctx, "the dry run's URL", chromedp.Location())

	// (d) A replay with a wrong token is refused; nothing changes.
	step(t, bctx, "replay with a wrong token",
		chromedp.SetValue(chromedp.CSS(`#replay-form input[name="token"]`), "not-the-admin-token-123"),
		chromedp.Click(chromedp.CSS(`#replay-confirm`)),
		chromedp.WaitVisible(chromedp.CSS(`#error`)),
	)
	refusal := read(t, bctx, "read the refusal", chromedp.Text(chromedp.CSS(`#error`)))
	if !strings.Contains(refusal, "admin token is missing or wrong") {
		t.Errorf("refusal without the token: %q", refusal)
	}
	pages.check(bctx, "refused-token")
	if n := count(t, e, dlq.Filter{}); n != 3 {
		t.Fatalf("after a refused replay %d dead letters, want 3", n)
	}

	// (e) A page on another origin posting the confirm form, right token
	// and all, is refused by the cross-origin protection.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<!doctype html><form id="f" method="post" action="%s/console/actions">
<input name="action" value="replay"><input name="code" value="INVALID_PARAMETERS"><input name="token" value="%s">
</form><button id="go" onclick="document.getElementById('f').submit()">go</button>`, base, consoleToken)
	}))
	defer evil.Close()
	step(t, bctx, "a cross-origin form post",
		chromedp.Navigate(evil.URL),
		chromedp.Click(chromedp.CSS(`#go`)),
		chromedp.WaitVisible(chromedp.CSS(`#error`)),
	)
	crossOrigin := read(t, bctx, "read the refusal", chromedp.Text(chromedp.CSS(`#error`)))
	if !strings.Contains(crossOrigin, "Cross-origin request refused") {
		t.Errorf("cross-origin post: %q", crossOrigin)
	}
	if n := count(t, e, dlq.Filter{}); n != 3 {
		t.Fatalf("after a cross-origin post %d dead letters, want 3", n)
	}

	// (c) The vendor is fixed (the fault was for two requests, spent):
	// replay with the token; the job page's progress (polled by htmx)
	// ends done, and each event reaches the vendor once.
	step(t, bctx, "replay with the token",
		chromedp.Navigate(actionsURL),
		chromedp.WaitVisible(chromedp.CSS(`#replay-form`)),
		chromedp.SetValue(chromedp.CSS(`#replay-form input[name="token"]`), consoleToken),
		chromedp.Click(chromedp.CSS(`#replay-confirm`)),
		chromedp.WaitVisible(chromedp.CSS(`#job-done`)),
	)
	done := read(t, bctx, "read the job's end", chromedp.Text(chromedp.CSS(`#job-done`)))
	if !strings.Contains(done, "replayed 2 of 2") {
		t.Errorf("job: %q", done)
	}
	pages.check(bctx, "replay-done")
	// The job page follows the replayed events to their outcome (htmx
	// polls until each is delivered or failed again).
	step(t, bctx, "the replay's outcome",
		chromedp.WaitVisible(chromedp.CSS(`#job-outcome[data-settled="true"]`)),
	)
	if got := read(t, bctx, "delivered since", chromedp.AttributeValue(chromedp.CSS(`#job-outcome`), "data-delivered")).Value; got != "2" {
		t.Errorf("the job page says %q of the replayed delivered, want 2", got)
	}
	pages.check(bctx, "replay-outcome")
	step(t, bctx, "the jobs index",
		chromedp.Navigate(base+"/console/jobs"),
		chromedp.WaitVisible(chromedp.CSS(`#jobs tr[data-job]`)),
	)
	if jobs := read(t, bctx, "read the jobs", chromedp.Text(chromedp.CSS(`#jobs`))); !strings.Contains(jobs, "replayed 2 of 2") {
		t.Errorf("the jobs index:\n%s", jobs)
	}
	for _, u := range users {
		testenv.Eventually(t, 20*time.Second, "replay for "+u+" delivered", func() bool { return deliveredTo(vendor, u) >= 1 })
	}
	testenv.Eventually(t, 20*time.Second, "chabok idle", func() bool { return e.Idle("chabok") })
	for _, u := range users {
		if n := deliveredTo(vendor, u); n != 1 {
			t.Errorf("the event of %s delivered %d times, want once", u, n)
		}
	}
	if n, left := count(t, e, dlq.Filter{}), count(t, e, dlq.Filter{Code: "EVENT_NOT_ALLOWED"}); n != 1 || left != 1 {
		t.Errorf("after the replay %d dead letters (%d EVENT_NOT_ALLOWED), want only that one", n, left)
	}

	// Where is my event? The replayed event was dead-lettered, then
	// delivered by the replay: its lookup says delivered; the events list
	// leads to it.
	step(t, bctx, "look a replayed event up",
		chromedp.Navigate(base+"/console/events"),
		chromedp.WaitVisible(chromedp.CSS(`#show`)),
		chromedp.SetValue(chromedp.CSS(`#show input[name="id"]`), rejected[0]),
		chromedp.Submit(chromedp.CSS(`#show`)),
		chromedp.WaitVisible(chromedp.CSS(`#event tr[data-sink="chabok"]`)),
	)
	if state := read(t, bctx, "the event's state", chromedp.AttributeValue(chromedp.CSS(`#event tr[data-sink="chabok"]`), "data-state")).Value; state != "delivered" {
		t.Errorf("the replayed event's state on its page: %q, want delivered", state)
	}
	pages.check(bctx, "event")
	step(t, bctx, "the deliveries list",
		chromedp.Navigate(base+"/console/events?since=1h&state=delivered"),
		chromedp.WaitVisible(chromedp.CSS(`#deliveries`)),
	)
	if listed := read(t, bctx, "read the deliveries", chromedp.Text(chromedp.CSS(`#deliveries`))); !strings.Contains(listed, rejected[0]) {
		t.Errorf("the deliveries list lacks the replayed event:\n%s", listed)
	}
	pages.check(bctx, "events")

	// Back on the sinks page, the sink recovered.
	step(t, bctx, "sinks page after the replay",
		chromedp.Navigate(base+"/console/sinks"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-sink="chabok"] span[data-breaker="closed"]`)),
	)
	pages.check(bctx, "sinks-recovered")

	// (f) Pause the sink from its page with the token (issue 21): the page
	// shows it paused, the dispatcher obeys (chapar_sink_paused, /readyz
	// still 200 and naming it), an event published meanwhile waits; resumed
	// from the page, it is delivered.
	step(t, bctx, "pause the sink from the sinks page",
		chromedp.SetValue(chromedp.CSS(`#pause-form input[name="token"]`), consoleToken),
		chromedp.Click(chromedp.CSS(`#pause-confirm`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-sink="chabok"] td[data-paused="true"]`)),
	)
	pages.check(bctx, "sinks-paused")
	testenv.Eventually(t, 10*time.Second, "the dispatcher paused", func() bool {
		_, m := httpGet(t, base+"/metrics")
		status, ready := httpGet(t, base+"/readyz")
		return strings.Contains(m, `chapar_sink_paused{sink="chabok"} 1`) && status == 200 && strings.Contains(ready, "paused") && strings.Contains(ready, "chabok")
	})
	e.Publish(testenv.Track(t, "order_paid", "u-paused"))
	// Observed for a second: nothing reaches the vendor.
	for end := time.Now().Add(time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if n := deliveredTo(vendor, "u-paused"); n != 0 {
			t.Fatalf("an event published while paused was delivered %d times", n)
		}
	}
	step(t, bctx, "resume the sink from the sinks page",
		chromedp.SetValue(chromedp.CSS(`#pause-form input[name="token"]`), consoleToken),
		chromedp.Click(chromedp.CSS(`#resume-confirm`)),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-sink="chabok"] td[data-paused="false"]`)),
	)
	testenv.Eventually(t, 20*time.Second, "the waiting event delivered once resumed", func() bool { return deliveredTo(vendor, "u-paused") == 1 })

	assertNoSecretAnywhere(t, base)
	t.Logf("browser test: %d pages checked in %s", pages.seen, time.Since(started).Round(time.Millisecond))
}

var consoleLink = regexp.MustCompile(`href="(/console/[^"#]*)"`)

// assertNoSecretAnywhere crawls every console page linked from the sinks
// and dead-letter pages (each dead letter, the dry runs, the jobs) and
// greps its HTML for the sink's access token and the admin token.
func assertNoSecretAnywhere(t *testing.T, base string) {
	t.Helper()
	seen := map[string]bool{}
	queue := []string{"/console/sinks", "/console/sinks/rows", "/console/dead-letters", "/console/actions"}
	for len(queue) > 0 && len(seen) < 200 {
		path := strings.ReplaceAll(queue[0], "&amp;", "&")
		queue = queue[1:]
		if seen[path] || strings.HasPrefix(path, "/console/static/") {
			continue
		}
		seen[path] = true
		status, body := httpGet(t, base+path)
		if status != 200 {
			t.Errorf("%s: status %d", path, status)
		}
		assertNoSecret(t, path, body)
		for _, m := range consoleLink.FindAllStringSubmatch(body, -1) {
			queue = append(queue, m[1])
		}
	}
	if len(seen) < 6 {
		t.Errorf("crawled only %d console pages: %v", len(seen), seen)
	}
}

// The console is off unless enabled: the admin listener serves no
// /console/ page, and /metrics as before.
func TestConsoleOffByDefault(t *testing.T) {
	e := testenv.New(t)
	admin := testenv.FreeAddr(t)
	cfg := fmt.Sprintf(`
admin: {listen: %q}
sinks:
  - {name: chabok, vendor: chabok, base_url: %s, settings: {app_id: demoapp, access_token: x}}
routes:
  - sinks: [chabok]
`, admin, e.URL[emulator.Chabok])
	startRun(t, e, admin, cfg)
	for path, want := range map[string]int{"/console/": 404, "/console/sinks": 404, "/metrics": 200} {
		if status, _ := httpGet(t, "http://"+admin+path); status != want {
			t.Errorf("%s: status %d, want %d", path, status, want)
		}
	}
}
