package console_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/console"
	"github.com/chapar-dev/chapar/internal/topology"
)

// recordPauses is what the dispatcher gives the console: the record
// dispatcher sinks pause writes, in the test's JetStream.
type recordPauses struct {
	f *fixture
}

func (p *recordPauses) SetPaused(ctx context.Context, sink string, paused bool, by string) error {
	return p.f.env.Topo.SetOperatorPause(ctx, p.f.env.JS, sink, topology.OperatorPause{Paused: paused, At: time.Now(), By: by})
}

func postTo(t *testing.T, f *fixture, path string, form url.Values) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.url+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// Issue 21: the sinks page shows whether each sink is paused (the
// deployment's record) and, with the admin token, pauses and resumes it;
// without the token, or for a sink not configured, nothing is recorded.
func TestPauseFromTheSinksPage(t *testing.T) {
	p := &recordPauses{}
	f := newFixture(t, token, 50, func(o *console.Options) { o.Pauses = p })
	p.f = f
	paused := func() bool {
		t.Helper()
		m, err := f.env.Topo.OperatorPauses(context.Background(), f.env.JS)
		if err != nil {
			t.Fatal(err)
		}
		return m["chabok"].Paused
	}
	_, page := get(t, f.url+"/console/sinks")
	if !strings.Contains(page, `data-paused="false">running`) || !strings.Contains(page, `id="pause-form"`) {
		t.Fatalf("sinks page before a pause:\n%s", page)
	}
	pause := func(action, sink, tok string) (*http.Response, string) {
		return postTo(t, f, "/console/sinks/pause", url.Values{"action": {action}, "sink": {sink}, "token": {tok}})
	}
	for _, c := range []struct {
		name, action, sink, tok string
		status                  int
		say                     string
	}{
		{"no token", "pause", "chabok", "", http.StatusForbidden, "token is missing or wrong"},
		{"wrong token", "pause", "chabok", token + "x", http.StatusForbidden, "token is missing or wrong"},
		{"not a configured sink", "pause", "chabk", token, http.StatusBadRequest, "the configured sinks are chabok"},
		{"no action", "", "chabok", token, http.StatusBadRequest, "use pause or resume"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := pause(c.action, c.sink, c.tok)
			if resp.StatusCode != c.status || !strings.Contains(body, c.say) {
				t.Errorf("status %d, want %d saying %q:\n%s", resp.StatusCode, c.status, c.say, body)
			}
			if paused() {
				t.Error("recorded paused")
			}
		})
	}
	resp, body := pause("pause", "chabok", token)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/console/sinks" {
		t.Fatalf("pause: %d %q\n%s", resp.StatusCode, resp.Header.Get("Location"), body)
	}
	if !paused() {
		t.Fatal("pause from the console not recorded")
	}
	if _, rows := get(t, f.url+"/console/sinks/rows"); !strings.Contains(rows, `data-paused="true"><span class="paused">paused</span>`) {
		t.Errorf("sinks rows after the pause:\n%s", rows)
	}
	if resp, _ := pause("resume", "chabok", token); resp.StatusCode != http.StatusSeeOther || paused() {
		t.Errorf("resume: %d, paused %v", resp.StatusCode, paused())
	}
}

// Without a configured admin token the sinks page offers no pause, and a
// post is refused.
func TestPauseDisabledWithoutAToken(t *testing.T) {
	p := &recordPauses{}
	f := newFixture(t, "", 50, func(o *console.Options) { o.Pauses = p })
	p.f = f
	if _, page := get(t, f.url+"/console/sinks"); strings.Contains(page, `id="pause-form"`) || !strings.Contains(page, `id="pause-disabled"`) {
		t.Errorf("sinks page without a token:\n%s", page)
	}
	resp, body := postTo(t, f, "/console/sinks/pause", url.Values{"action": {"pause"}, "sink": {"chabok"}, "token": {"x"}})
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "disabled") {
		t.Errorf("status %d:\n%s", resp.StatusCode, body)
	}
}
