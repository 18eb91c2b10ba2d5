package console_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/console"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/redeliver"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// laterRunner is the console's redeliveries once the fixture's
// environment exists (the console is built with it).
type laterRunner struct{ r redeliver.Runner }

func (l *laterRunner) Redeliver(ctx context.Context, sink string, f redeliver.Filter, dry bool, p func(redeliver.Result)) (redeliver.Result, error) {
	return l.r.Redeliver(ctx, sink, f, dry, p)
}

var jobRE = regexp.MustCompile(`/console/jobs/([0-9a-f]+)`)

// Issue 21: the redeliver page counts a window's events for one sink (dry
// run, a sample), and with the admin token starts the job, whose page
// shows its progress and end; the sink gets the window again, the other
// sink nothing.
func TestRedeliverFromTheConsole(t *testing.T) {
	l := &laterRunner{}
	f := newFixture(t, token, 50, func(o *console.Options) { o.Redeliveries = l })
	e := f.env
	sinks := []config.Sink{e.Sink("hook", emulator.Webhook, nil, nil), e.Sink("chabok", emulator.Chabok, nil, nil)}
	routes := []config.Route{{Sinks: []string{"hook", "chabok"}}}
	e.Start(sinks, routes)
	l.r = redeliver.Runner{JS: e.JS, Topo: e.Topo, Config: e.Config(sinks, routes)}
	since := time.Now()
	for range 3 {
		e.Publish(testenv.Track(t, "signup", "user-1"))
	}
	testenv.Eventually(t, 20*time.Second, "first deliveries", func() bool {
		return e.Emu.Vendor(emulator.Webhook).Count(200) == 3 && e.Idle("hook", "chabok")
	})
	chabok := e.Emu.Vendor(emulator.Chabok).Count(200)

	q := url.Values{"sink": {"hook"}, "since": {since.Format(time.RFC3339Nano)}}
	status, page := get(t, f.url+"/console/redeliver?"+q.Encode())
	if status != http.StatusOK || !strings.Contains(page, `data-matched="3"`) || !strings.Contains(page, `id="redeliver-form"`) ||
		strings.Count(page, "signup") < 3 {
		t.Fatalf("dry run page (%d):\n%s", status, page)
	}
	if e.Emu.Vendor(emulator.Webhook).Count(200) != 3 {
		t.Fatal("the dry run sent")
	}
	until := regexp.MustCompile(`name="until" value="([^"]+)"`).FindStringSubmatch(page)
	if until == nil {
		t.Fatalf("no until in the confirm form:\n%s", page)
	}
	form := url.Values{"sink": {"hook"}, "since": {since.Format(time.RFC3339Nano)}, "until": {until[1]}}
	if resp, body := postTo(t, f, "/console/redeliver", form); resp.StatusCode != http.StatusForbidden {
		t.Errorf("without the token: %d\n%s", resp.StatusCode, body)
	}
	form.Set("token", token)
	resp, body := postTo(t, f, "/console/redeliver", form)
	m := jobRE.FindStringSubmatch(resp.Header.Get("Location"))
	if resp.StatusCode != http.StatusSeeOther || m == nil {
		t.Fatalf("start: %d %q\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	var job string
	testenv.Eventually(t, 20*time.Second, "the job done", func() bool {
		_, job = get(t, f.url+"/console/jobs/"+m[1])
		return strings.Contains(job, `data-running="false"`)
	})
	if !strings.Contains(job, `id="job-done"`) || !strings.Contains(job, "re-sent 3 of the 3 events") {
		t.Errorf("job page:\n%s", job)
	}
	testenv.Eventually(t, 20*time.Second, "the redelivery", func() bool {
		return e.Emu.Vendor(emulator.Webhook).Count(200) == 6 && e.Idle("hook", "chabok")
	})
	if got := e.Emu.Vendor(emulator.Chabok).Count(200); got != chabok {
		t.Errorf("chabok got %d requests during hook's redelivery", got-chabok)
	}
}
