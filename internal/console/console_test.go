package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/chapar-dev/chapar/internal/console"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/metrics"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

const token = "test-admin-token-0123456789"

// fixture is a console over a real dead-letter stream holding these
// records, at sequences 1…7 in this order.
type fixture struct {
	env   *testenv.Env
	store *dlq.Store
	url   string
}

var base = time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)

var records = []dlq.Record{
	{Sink: "chabok", Reason: outcome.VendorRejected, Status: 400, Code: "INVALID_PARAMETERS", EventType: "chapar.track"},
	{Sink: "chabok", Reason: outcome.RetriesExhausted, Status: 503, EventType: "chapar.track"},
	{Sink: "kenar", Reason: outcome.VendorRejected, Status: 404, Code: "NOT_FOUND", EventType: "chapar.track"},
	{Sink: "chabok", Reason: outcome.VendorRejected, Status: 400, Code: "INVALID_PARAMETERS", EventType: "chapar.purchase"},
	{Sink: "gateway", Reason: outcome.VendorRejected, Status: 400, Code: "EVENT_TYPE_DOES_NOT_EXIST", EventType: "chapar.track"},
	{Sink: dlq.NoSink, Reason: outcome.InvalidEnvelope},
	{Sink: "chabok", Reason: outcome.VendorRejected, Status: 400, Code: "INVALID_PARAMETERS", EventType: "chapar.track"},
}

func newFixture(t *testing.T, tok string, pageSize int, opts ...func(*console.Options)) *fixture {
	t.Helper()
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := dlq.NewWriter(e.JS, e.Topo)
	for i, r := range records {
		r.EventID = fmt.Sprintf("evt-%d", i+1)
		r.Origin = uint64(i + 1)
		r.Attempts = 1
		r.LastAttempt = base.Add(time.Duration(i) * time.Hour)
		r.FirstAttempt = r.LastAttempt
		r.Data = []byte(fmt.Sprintf(`{"id":%q,"type":%q}`, r.EventID, r.EventType))
		if _, err := w.Write(ctx, &r); err != nil {
			t.Fatal(err)
		}
	}
	store := dlq.NewStore(e.JS, e.Topo)
	o := console.Options{
		DeadLetters: store,
		Sinks:       metrics.New("chabok").SinkReport(e.JS, e.Topo, []metrics.SinkConfig{{Name: "chabok", Vendor: "chabok"}}),
		Token:       tok, Logger: zaptest.NewLogger(t), PageSize: pageSize,
	}
	for _, f := range opts {
		f(&o)
	}
	c, err := console.New(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	return &fixture{env: e, store: store, url: srv.URL}
}

// noRedirect lets a test see a redirect rather than follow it.
var noRedirect = &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func get(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := noRedirect.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var seqRE = regexp.MustCompile(`<tr data-seq="(\d+)">`)

func seqs(body string) string {
	var out []string
	for _, m := range seqRE.FindAllStringSubmatch(body, -1) {
		out = append(out, m[1])
	}
	return strings.Join(out, ",")
}

func TestDeadLetterPagination(t *testing.T) {
	f := newFixture(t, "", 3)
	for _, c := range []struct {
		name, query, want, next string
	}{
		{"first page", "", "1,2,3", "after=3"},
		{"second page from its cursor", "after=3", "4,5,6", "after=6"},
		{"last page, no next link", "after=6", "7", ""},
		{"past the end", "after=7", "", ""},
		{"a filtered page's next link keeps the filter", "sink=chabok", "1,2,4", "sink=chabok&amp;after=4"},
		{"and the filtered next page", "sink=chabok&after=4", "7", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := get(t, f.url+"/console/dead-letters?"+c.query)
			if status != http.StatusOK {
				t.Fatalf("status %d:\n%s", status, body)
			}
			if got := seqs(body); got != c.want {
				t.Errorf("rows %q, want %q", got, c.want)
			}
			hasNext := strings.Contains(body, `id="next"`)
			if c.next == "" && hasNext {
				t.Errorf("a next link on the last page")
			}
			if c.next != "" && !strings.Contains(body, `href="/console/dead-letters?`+c.next+`" id="next"`) {
				t.Errorf("no next link to %s:\n%s", c.next, body)
			}
		})
	}
}

func TestDeadLetterFilters(t *testing.T) {
	f := newFixture(t, "", 50)
	for _, c := range []struct {
		name, query string
		status      int
		want        string // rows, or what the error names
	}{
		{"everything", "", 200, "1,2,3,4,5,6,7"},
		{"sink", "sink=kenar", 200, "3"},
		{"invalid envelopes' sink", "sink=-", 200, "6"},
		{"reason", "reason=retries_exhausted", 200, "2"},
		{"status", "status=400", 200, "1,4,5,7"},
		{"vendor code", "code=INVALID_PARAMETERS", 200, "1,4,7"},
		{"event type", "type=chapar.purchase", 200, "4"},
		{"event id", "id=evt-5", 200, "5"},
		{"since", "since=2026-11-30T13:00:00Z", 200, "6,7"},
		{"until", "until=2026-11-30T09:00:00Z", 200, "1,2"},
		{"a browser's datetime-local", "since=2026-11-30T10:00&until=2026-11-30T11:00", 200, "3,4"},
		{"combined", "sink=chabok&code=INVALID_PARAMETERS&type=chapar.track", 200, "1,7"},
		{"nothing matches", "code=NOPE", 200, ""},
		{"bad status", "status=abc", 400, "status:"},
		{"bad reason", "reason=oops", 400, "reason:"},
		{"bad time", "since=yesterday", 400, "since:"},
		{"bad cursor", "after=x", 400, "after:"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := get(t, f.url+"/console/dead-letters?"+c.query)
			if status != c.status {
				t.Fatalf("status %d, want %d:\n%s", status, c.status, body)
			}
			if c.status != 200 {
				if !strings.Contains(body, `id="error">`+c.want) {
					t.Errorf("error does not name %q:\n%s", c.want, body)
				}
				return
			}
			if got := seqs(body); got != c.want {
				t.Errorf("rows %q, want %q", got, c.want)
			}
		})
	}
}

func TestDeadLetterAndDryRunPages(t *testing.T) {
	f := newFixture(t, token, 50)
	status, body := get(t, f.url+"/console/dead-letters/4")
	for _, want := range []string{"evt-4", "INVALID_PARAMETERS", "chapar.purchase", "never replayed", `&#34;id&#34;: &#34;evt-4&#34;`} {
		if status != 200 || !strings.Contains(body, want) {
			t.Errorf("dead letter 4 (status %d) lacks %q:\n%s", status, want, body)
		}
	}
	if status, _ := get(t, f.url+"/console/dead-letters/99"); status != http.StatusNotFound {
		t.Errorf("a missing dead letter: status %d", status)
	}
	status, body = get(t, f.url+"/console/actions?code=INVALID_PARAMETERS")
	if status != 200 || !strings.Contains(body, `data-matched="3"`) || !strings.Contains(body, `id="replay-confirm"`) {
		t.Errorf("dry run (status %d) does not say 3 match with a confirm form:\n%s", status, body)
	}
	if strings.Contains(body, token) {
		t.Error("the dry-run page shows the admin token")
	}
	if n := countDeadLetters(t, f); n != 7 {
		t.Errorf("the dry run changed the dead letters: %d left", n)
	}
}

func countDeadLetters(t *testing.T, f *fixture) int {
	t.Helper()
	recs, err := f.store.List(context.Background(), dlq.Filter{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	return len(recs)
}

// post sends a confirm form as the console's own page would (same
// origin), plus extra headers.
func post(t *testing.T, f *fixture, form url.Values, hdr map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.url+"/console/actions", strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestMutationsAreGuarded(t *testing.T) {
	purge := func(tok string) url.Values {
		return url.Values{"action": {"purge"}, "code": {"INVALID_PARAMETERS"}, "token": {tok}}
	}
	sameOrigin := map[string]string{"Sec-Fetch-Site": "same-origin"}
	t.Run("disabled without a configured token", func(t *testing.T) {
		f := newFixture(t, "", 50)
		_, page := get(t, f.url+"/console/actions?code=INVALID_PARAMETERS")
		if strings.Contains(page, `id="purge-form"`) || !strings.Contains(page, "read-only: no admin token configured") {
			t.Errorf("the dry-run page offers a purge with mutations disabled:\n%s", page)
		}
		resp, body := post(t, f, purge("anything"), sameOrigin)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, "disabled") {
			t.Errorf("status %d:\n%s", resp.StatusCode, body)
		}
		if n := countDeadLetters(t, f); n != 7 {
			t.Errorf("%d dead letters left, want 7", n)
		}
	})
	f := newFixture(t, token, 50)
	for _, c := range []struct {
		name string
		form url.Values
		hdr  map[string]string
		say  string
	}{
		{"no token", purge(""), sameOrigin, "token is missing or wrong"},
		{"wrong token", purge("test-admin-token-0123456788"), sameOrigin, "token is missing or wrong"},
		{"a token's prefix", purge(token[:10]), sameOrigin, "token is missing or wrong"},
		{"cross-site, right token", purge(token), map[string]string{"Sec-Fetch-Site": "cross-site"}, "Cross-origin request refused"},
		{"same-site (another port), right token", purge(token), map[string]string{"Sec-Fetch-Site": "same-site"}, "Cross-origin request refused"},
		{"foreign Origin, right token", purge(token), map[string]string{"Origin": "http://evil.example"}, "Cross-origin request refused"},
	} {
		t.Run(c.name, func(t *testing.T) {
			resp, body := post(t, f, c.form, c.hdr)
			if resp.StatusCode != http.StatusForbidden || !strings.Contains(body, c.say) {
				t.Errorf("status %d, want 403 saying %q:\n%s", resp.StatusCode, c.say, body)
			}
			if strings.Contains(body, token[:10]) {
				t.Error("the refusal shows the token")
			}
			if n := countDeadLetters(t, f); n != 7 {
				t.Errorf("%d dead letters left, want 7", n)
			}
		})
	}
	t.Run("right token, same origin: the purge runs as a job", func(t *testing.T) {
		resp, body := post(t, f, purge(token), sameOrigin)
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/jobs/") {
			t.Fatalf("status %d, Location %q:\n%s", resp.StatusCode, loc, body)
		}
		var page string
		testenv.Eventually(t, 20*time.Second, "the job to finish", func() bool {
			_, page = get(t, f.url+loc+"/progress")
			return strings.Contains(page, `data-running="false"`)
		})
		if !strings.Contains(page, "purged 3 dead letters") || strings.Contains(page, "hx-trigger") {
			t.Errorf("finished job's fragment (should stop polling):\n%s", page)
		}
		if n := countDeadLetters(t, f); n != 4 {
			t.Errorf("%d dead letters left, want 4", n)
		}
	})
}

// The page set the console serves, for the header checks.
func TestSecurityHeaders(t *testing.T) {
	f := newFixture(t, "", 50)
	for _, path := range []string{"/console/sinks", "/console/dead-letters", "/console/static/htmx.min.js"} {
		resp, err := http.Get(f.url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Errorf("%s: status %d", path, resp.StatusCode)
		}
		for h, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"} {
			if got := resp.Header.Get(h); got != want {
				t.Errorf("%s: %s = %q, want %q", path, h, got, want)
			}
		}
		if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
			t.Errorf("%s: CSP %q", path, csp)
		}
	}
}

// A replay runs as one job at a time: a second confirm while it runs is
// refused (a double click must not replay twice), and the job ends with
// the replay service's result.
func TestReplayJob(t *testing.T) {
	f := newFixture(t, token, 50)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Replay only puts dead letters back for sinks a dispatcher runs.
	if _, err := f.env.Topo.EnsureSink(ctx, f.env.JS, "chabok", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 10}); err != nil {
		t.Fatal(err)
	}
	same := map[string]string{"Sec-Fetch-Site": "same-origin"}
	// One replay a second: the three take two seconds at least, so the
	// job is still running when the second confirm arrives.
	replay := url.Values{"action": {"replay"}, "code": {"INVALID_PARAMETERS"}, "rate": {"1"}, "token": {token}}
	resp, body := post(t, f, replay, same)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("status %d:\n%s", resp.StatusCode, body)
	}
	if resp, body := post(t, f, replay, same); resp.StatusCode != http.StatusConflict || !strings.Contains(body, "Another replay or purge is running") {
		t.Errorf("a second job while one runs: status %d:\n%s", resp.StatusCode, body)
	}
	if _, page := get(t, f.url+loc); !strings.Contains(page, `data-running="true"`) || !strings.Contains(page, `hx-get="`+loc+`/progress"`) {
		t.Errorf("a running job's page does not poll its progress:\n%s", page)
	}
	var page string
	testenv.Eventually(t, 20*time.Second, "the replay to finish", func() bool {
		_, page = get(t, f.url+loc+"/progress")
		return strings.Contains(page, `data-running="false"`)
	})
	if !strings.Contains(page, "replayed 3 of 3 matching dead letters") {
		t.Errorf("finished replay:\n%s", page)
	}
	if n := countDeadLetters(t, f); n != 4 {
		t.Errorf("%d dead letters left, want 4", n)
	}
	if status, _ := get(t, f.url+"/console/jobs/nope"); status != http.StatusNotFound {
		t.Errorf("an unknown job: status %d", status)
	}
}

var attemptRE = regexp.MustCompile(`<tr data-attempt="(\d+)"><td>\d+</td><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td><td><code>([^<]*)</code></td><td>([^<]*)</td>`)

var runRE = regexp.MustCompile(`<tr data-run="(\d+)"><td>([^<]*)</td><td>(\d+)</td><td>[^<]*</td><td>[^<]*</td><td>(.*?)</td></tr>`)

// One dead letter's page lists each logged attempt (number, run, time,
// status, code, error) and its replay history; a record written before
// attempt logs says what it has instead.
func TestDeadLetterPageListsAttempts(t *testing.T) {
	f := newFixture(t, token, 50)
	var log dlq.AttemptLog
	add := func(replay, status int, code, err string) {
		log.Add(dlq.Attempt{At: base.Add(time.Duration(log.Total) * time.Minute), Replay: replay, Status: status, Code: code, Error: err, LatencyMS: 30})
	}
	for range 3 { // dropped from the log by the bound
		add(0, 503, "UNAVAILABLE", "transient failure: HTTP 503")
	}
	for range 7 {
		add(0, 503, "UNAVAILABLE", "transient failure: HTTP 503")
	}
	add(0, 400, "BAD_FIELD", "vendor rejected: HTTP 400 BAD_FIELD <script>")
	add(1, 502, "", "transient failure: HTTP 502")
	add(1, 422, "STILL_BAD", "vendor rejected: HTTP 422 STILL_BAD")
	rec := &dlq.Record{Sink: "chabok", Reason: outcome.VendorRejected, Status: 422, Code: "STILL_BAD", Attempts: 2,
		EventID: "evt-logged", EventType: "chapar.track", Origin: 99, Replays: 1, Log: log, Data: []byte(`{}`)}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := dlq.NewWriter(f.env.JS, f.env.Topo).Write(ctx, rec); err != nil {
		t.Fatal(err)
	}
	status, body := get(t, f.url+fmt.Sprintf("/console/dead-letters/%d", len(records)+1))
	if status != 200 {
		t.Fatalf("status %d:\n%s", status, body)
	}
	var rows []string
	for _, m := range attemptRE.FindAllStringSubmatch(body, -1) {
		rows = append(rows, strings.Join(m[1:], " | "))
	}
	want := []string{
		"4 | first delivery | 2026-11-30 08:03:00Z | 503 | UNAVAILABLE | transient failure: HTTP 503",
		"5 | first delivery | 2026-11-30 08:04:00Z | 503 | UNAVAILABLE | transient failure: HTTP 503",
		"6 | first delivery | 2026-11-30 08:05:00Z | 503 | UNAVAILABLE | transient failure: HTTP 503",
		"7 | first delivery | 2026-11-30 08:06:00Z | 503 | UNAVAILABLE | transient failure: HTTP 503",
		"8 | first delivery | 2026-11-30 08:07:00Z | 503 | UNAVAILABLE | transient failure: HTTP 503",
		"9 | first delivery | 2026-11-30 08:08:00Z | 503 | UNAVAILABLE | transient failure: HTTP 503",
		"10 | first delivery | 2026-11-30 08:09:00Z | 503 | UNAVAILABLE | transient failure: HTTP 503",
		"11 | first delivery | 2026-11-30 08:10:00Z | 400 | BAD_FIELD | vendor rejected: HTTP 400 BAD_FIELD &lt;script&gt;",
		"12 | replay 1 | 2026-11-30 08:11:00Z | 502 |  | transient failure: HTTP 502",
		"13 | replay 1 | 2026-11-30 08:12:00Z | 422 | STILL_BAD | vendor rejected: HTTP 422 STILL_BAD",
	}
	if strings.Join(rows, "\n") != strings.Join(want, "\n") {
		t.Errorf("attempt rows:\n%s\nwant:\n%s", strings.Join(rows, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(body, "13 attempts in all, over the first delivery and 1 replay; the first 3 are not kept") {
		t.Errorf("the page does not say how many attempts there were and how many are not kept:\n%s", body)
	}
	var runs []string
	for _, m := range runRE.FindAllStringSubmatch(body, -1) {
		runs = append(runs, strings.Join(m[1:], " | "))
	}
	wantRuns := []string{
		"0 | first delivery | 8 | 400 <code>BAD_FIELD</code> · dead-lettered, then replayed",
		"1 | replay 1 | 2 | 422 <code>STILL_BAD</code> · dead-lettered: this entry",
	}
	if strings.Join(runs, "\n") != strings.Join(wantRuns, "\n") {
		t.Errorf("replay history:\n%s\nwant:\n%s", strings.Join(runs, "\n"), strings.Join(wantRuns, "\n"))
	}

	// Dead letter 4 was written without a log: the page says so.
	_, body = get(t, f.url+"/console/dead-letters/4")
	if !strings.Contains(body, "recorded before Chapar kept each attempt") || attemptRE.MatchString(body) {
		t.Errorf("a record without a log is not shown as one:\n%s", body)
	}
}

// A dead letter's origin is shown as the operator looks it up (nats stream
// get <stream> <seq>): the partition and the sequence in its stream, not
// their encoding (partition 1, sequence 5 is 72057594037927941); the
// partition only when the deployment has more than one.
func TestDeadLetterPageShowsPartitionAndSequence(t *testing.T) {
	for _, c := range []struct {
		partitions int
		stream     string
		want, not  string
	}{
		{1, "CHAPAR_EVENTS", "(events stream sequence 5)", "partition"},
		{3, "CHAPAR_EVENTS_1", "(partition 1, events stream sequence 5)", "72057594037927941"},
		{3, "CHAPAR_EVENTS_0", "(partition 0, events stream sequence 5)", "xx-never"},
	} {
		t.Run(c.stream, func(t *testing.T) {
			f := newFixture(t, token, 50, func(o *console.Options) { o.Partitions = c.partitions })
			rec := &dlq.Record{Sink: "chabok", Reason: outcome.VendorRejected, Status: 400, EventID: "evt-p",
				EventType: "chapar.track", Origin: topology.Origin(c.stream, 5), Data: []byte(`{}`)}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := dlq.NewWriter(f.env.JS, f.env.Topo).Write(ctx, rec); err != nil {
				t.Fatal(err)
			}
			status, body := get(t, f.url+fmt.Sprintf("/console/dead-letters/%d", len(records)+1))
			_, record, _ := strings.Cut(body, `id="record"`)
			record, _, _ = strings.Cut(record, "</dl>")
			if status != 200 || !strings.Contains(record, c.want) || strings.Contains(record, c.not) {
				t.Errorf("status %d, record:\n%s\nwant %q and no %q", status, record, c.want, c.not)
			}
		})
	}
}

// Beyond loopback (RequireToken) every console page, and every fragment
// htmx polls, asks for the admin token: without it, or with a wrong one,
// nothing of a dead letter is shown. With it, the pages are as before.
func TestEveryPageAsksForTheTokenBeyondLoopback(t *testing.T) {
	f := newFixture(t, token, 50, func(o *console.Options) { o.RequireToken = true })
	open := newFixture(t, token, 50)
	pages := []string{"/console/sinks", "/console/sinks/rows", "/console/dead-letters", "/console/dead-letters/1",
		"/console/actions?sink=chabok", "/console/static/console.css", "/console/no-such-page"}
	for _, c := range []struct {
		name     string
		user, pw string // empty user and pw: no credentials
		fixture  *fixture
		want     int // 0: the page's own status (not 401)
	}{
		{"no credentials", "", "", f, http.StatusUnauthorized},
		{"wrong token", "admin", "test-admin-token-0123456788", f, http.StatusUnauthorized},
		{"a token's prefix", "admin", token[:10], f, http.StatusUnauthorized},
		{"the token", "admin", token, f, 0},
		{"the token, any user name", "", token, f, 0},
		{"loopback: no credentials needed", "", "", open, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, p := range pages {
				req, err := http.NewRequest(http.MethodGet, c.fixture.url+p, nil)
				if err != nil {
					t.Fatal(err)
				}
				if c.user != "" || c.pw != "" {
					req.SetBasicAuth(c.user, c.pw)
				}
				resp, err := noRedirect.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				body := string(b)
				switch {
				case c.want == http.StatusUnauthorized:
					if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Basic ") ||
						strings.Contains(body, "evt-1") || strings.Contains(body, token) {
						t.Errorf("%s: status %d, WWW-Authenticate %q, want 401 asking for Basic credentials and no dead letter:\n%.300s",
							p, resp.StatusCode, resp.Header.Get("WWW-Authenticate"), body)
					}
				case resp.StatusCode == 401:
					t.Errorf("%s: 401 with %s", p, c.name)
				case p == "/console/dead-letters/1" && !strings.Contains(body, "evt-1"):
					t.Errorf("%s: status %d, the dead letter is not shown:\n%.300s", p, resp.StatusCode, body)
				}
			}
		})
	}
	// The typed token still guards a purge: signing in is not consent.
	req, _ := http.NewRequest(http.MethodPost, f.url+"/console/actions", strings.NewReader(url.Values{"action": {"purge"}, "code": {"INVALID_PARAMETERS"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	req.SetBasicAuth("admin", token)
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("a purge signed in but without the typed token: status %d, want 403", resp.StatusCode)
	}
	if n := countDeadLetters(t, f); n != 7 {
		t.Errorf("%d dead letters left after a purge without the typed token, want 7", n)
	}
}
