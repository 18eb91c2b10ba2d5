package console_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap/zaptest"

	"github.com/chapar-dev/chapar/internal/console"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/metrics"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// A malformed filter is the visitor's mistake, a 400 saying which field
// and why, on every page that takes a filter; it never reaches NATS as a
// subject (a <script> sink answered 500 with a NATS subject error), and
// * or > is never a wildcard.
func TestMalformedFilterIsABadRequest(t *testing.T) {
	f := newFixture(t, token, 50)
	for _, c := range []struct {
		name, query, want string
	}{
		{"markup as a sink", "sink=%3Cscript%3Ealert(1)%3C%2Fscript%3E", "is not a sink name"},
		{"* as a sink", "sink=*", `sink: &#34;*&#34; is not a sink name`},
		{"> as a sink", "sink=%3E", `sink: &#34;&gt;&#34; is not a sink name`},
		{"a subject under a sink", "sink=chabok.%3E", "is not a sink name"},
		{"a space in a sink", "sink=chabok+x", "is not a sink name"},
		{"a seq that is not one", "seq=x", "seq: &#34;x&#34; is not a stream sequence"},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, page := range []string{"/console/dead-letters?", "/console/actions?"} {
				status, body := get(t, f.url+page+c.query)
				if status != http.StatusBadRequest || !strings.Contains(body, c.want) || strings.Contains(body, "<script>alert") {
					t.Errorf("%s%s: status %d, want 400 saying %q:\n%.2000s", page, c.query, status, c.want, body)
				}
			}
			form, err := url.ParseQuery(c.query)
			if err != nil {
				t.Fatal(err)
			}
			form.Set("action", "purge")
			form.Set("token", token)
			if resp, body := post(t, f, form, map[string]string{"Sec-Fetch-Site": "same-origin"}); resp.StatusCode != http.StatusBadRequest {
				t.Errorf("a purge of %s: status %d, want 400:\n%.1000s", c.query, resp.StatusCode, body)
			}
		})
	}
	if n := countDeadLetters(t, f); n != len(records) {
		t.Errorf("%d dead letters left, want %d", n, len(records))
	}
}

// An invalid envelope's page says what it lacks (no id, no type) instead
// of "· ·", that no vendor request was made (not that it was recorded
// before attempts were kept), and its purge link selects it alone, not
// every invalid envelope.
func TestInvalidEnvelopePage(t *testing.T) {
	f := newFixture(t, token, 50)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// As the router writes one: no id, no type, no attempt.
	if _, err := dlq.NewWriter(f.env.JS, f.env.Topo).Write(ctx, &dlq.Record{Sink: dlq.NoSink, Reason: outcome.InvalidEnvelope,
		Error: "envelope: not JSON", Subject: "chapar.events.track", Origin: 100, Data: []byte("junk"), LastAttempt: base}); err != nil {
		t.Fatal(err)
	}
	seq := "8"
	status, body := get(t, f.url+"/console/dead-letters/"+seq)
	if status != 200 {
		t.Fatalf("status %d:\n%s", status, body)
	}
	for _, want := range []string{"no id or type could be read from it · published on <code>chapar.events.track</code>",
		`id="no-attempts">No vendor request was made`, "(invalid_envelope): envelope: not JSON",
		`href="/console/actions?seq=` + seq + `"`} {
		if !strings.Contains(body, want) {
			t.Errorf("the page lacks %q:\n%s", want, body)
		}
	}
	for _, bad := range []string{"<code></code> ·  ·", "recorded before Chapar kept each attempt", "actions?id=&amp;sink=-"} {
		if strings.Contains(body, bad) {
			t.Errorf("the page has %q:\n%s", bad, body)
		}
	}
	// The link's dry run matches this one, of the two invalid envelopes.
	if _, body := get(t, f.url+"/console/actions?seq="+seq); !strings.Contains(body, `data-matched="1"`) || !strings.Contains(body, `name="through" value="`+seq+`"`) {
		t.Errorf("the dry run of seq=%s does not match it alone:\n%s", seq, body)
	}
	resp, body := post(t, f, url.Values{"action": {"purge"}, "seq": {seq}, "through": {seq}, "token": {token}}, map[string]string{"Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("purge: status %d:\n%s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	testenv.Eventually(t, 20*time.Second, "the purge to finish", func() bool {
		_, page := get(t, f.url+loc+"/progress")
		return strings.Contains(page, `data-running="false"`)
	})
	left, err := f.store.List(ctx, dlq.Filter{Reason: outcome.InvalidEnvelope}, 0)
	if err != nil || len(left) != 1 || left[0].Seq != 6 {
		t.Errorf("invalid envelopes left: %d (%v), want seq 6 alone", len(left), err)
	}
}

// The sinks page says what is waiting to retry now (scheduled retries and
// due ones not yet taken), read from JetStream, and the running totals
// since start under their own names: its Retrying column was a running
// total read as "retrying now".
func TestSinksPageRetryingNow(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := e.Topo.EnsureSink(ctx, e.JS, "chabok", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 10}); err != nil {
		t.Fatal(err)
	}
	// Five retries since start, all since done with.
	m := metrics.New("chabok") // a sink label only for configured sinks
	for range 5 {
		m.Retried("chabok", 503)
	}
	// Now: two retries scheduled an hour on, one due and not yet taken.
	for _, key := range []string{"k1", "k2"} {
		msg := nats.NewMsg(e.Topo.RetryWaitSubject("chabok", key))
		topology.Schedule(msg.Header, time.Now().Add(time.Hour), e.Topo.RetryDueSubject("chabok"))
		if _, err := e.JS.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.JS.Publish(ctx, e.Topo.RetryDueSubject("chabok"), []byte("{}")); err != nil {
		t.Fatal(err)
	}
	c, err := console.New(ctx, console.Options{DeadLetters: dlq.NewStore(e.JS, e.Topo), Logger: zaptest.NewLogger(t),
		Sinks: m.SinkReport(e.JS, e.Topo, []metrics.SinkConfig{{Name: "chabok", Vendor: "chabok"}})})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	srv := httptest.NewServer(c.Handler())
	t.Cleanup(srv.Close)
	status, body := get(t, srv.URL+"/console/sinks")
	for _, want := range []string{"<th>Retrying now</th>", "<th>Retries since start</th>", "<th>Delivered since start</th>",
		`data-retrying-now="3">3<small>2 scheduled · 1 due</small>`, `data-retries-total="5">5<small>`} {
		if status != 200 || !strings.Contains(body, want) {
			t.Errorf("the sinks page (status %d) lacks %q:\n%s", status, want, body)
		}
	}
	if strings.Contains(body, "<th>Retrying</th>") {
		t.Errorf("the sinks page still has a Retrying column:\n%s", body)
	}
}

var throughRE = regexp.MustCompile(`id="purge-form">[\s\S]*?name="through" value="(\d+)"`)

// A confirmed purge acts on what its dry run counted: a matching dead
// letter written between the dry run and the confirm is kept.
func TestConfirmActsOnWhatTheDryRunCounted(t *testing.T) {
	f := newFixture(t, token, 50)
	_, page := get(t, f.url+"/console/actions?code=INVALID_PARAMETERS")
	m := throughRE.FindStringSubmatch(page)
	if m == nil || !strings.Contains(page, `data-matched="3"`) {
		t.Fatalf("the dry run has no through field, or does not match 3:\n%s", page)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	late := dlq.Record{Sink: "chabok", Reason: outcome.VendorRejected, Status: 400, Code: "INVALID_PARAMETERS", EventID: "late", Origin: 99, LastAttempt: base}
	if _, err := dlq.NewWriter(f.env.JS, f.env.Topo).Write(ctx, &late); err != nil {
		t.Fatal(err)
	}
	resp, body := post(t, f, url.Values{"action": {"purge"}, "code": {"INVALID_PARAMETERS"}, "through": {m[1]}, "token": {token}},
		map[string]string{"Sec-Fetch-Site": "same-origin"})
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("purge: status %d:\n%s", resp.StatusCode, body)
	}
	var done string
	testenv.Eventually(t, 20*time.Second, "the purge to finish", func() bool {
		_, done = get(t, f.url+resp.Header.Get("Location")+"/progress")
		return strings.Contains(done, `data-running="false"`)
	})
	if !strings.Contains(done, "purged 3 dead letters") {
		t.Errorf("the job:\n%s", done)
	}
	left, err := f.store.List(ctx, dlq.Filter{Code: "INVALID_PARAMETERS"}, 0)
	if err != nil || len(left) != 1 || left[0].EventID != "late" {
		t.Errorf("left: %d (%v), want the late one alone", len(left), err)
	}
}

// A sink filter that matches nothing and names no configured sink says so,
// naming those that are (the fixture configures chabok): README's own
// --sink metrix matched nothing and said only that.
func TestUnknownSinkIsNamed(t *testing.T) {
	f := newFixture(t, token, 50)
	for _, c := range []struct{ query, hint string }{
		{"/console/dead-letters?sink=metrix", `No sink &#34;metrix&#34; is configured; the configured sinks are chabok.`},
		{"/console/actions?sink=metrix", `No sink &#34;metrix&#34; is configured; the configured sinks are chabok.`},
		{"/console/dead-letters?sink=chabok&status=418", ""},
		{"/console/dead-letters?sink=-&status=418", ""},
	} {
		status, body := get(t, f.url+c.query)
		if status != 200 || (c.hint != "" && !strings.Contains(body, c.hint)) || (c.hint == "" && strings.Contains(body, `id="hint"`)) {
			t.Errorf("%s: status %d, want hint %q:\n%s", c.query, status, c.hint, body)
		}
	}
}

// Issue 21: every list says how many dead letters match, on every page,
// and groups them by (sink, reason, status, code), largest first, each
// group linking to its dead letters: three identical failures are one row.
func TestDeadLetterTotalsAndGroups(t *testing.T) {
	f := newFixture(t, token, 2)
	for _, page := range []string{"/console/dead-letters", "/console/dead-letters?after=4"} {
		status, body := get(t, f.url+page)
		if status != http.StatusOK || !strings.Contains(body, `data-total="7"`) || !strings.Contains(body, "7 dead letters match, in 5 kinds of failure") {
			t.Errorf("%s: %d, want a total of 7 in 5 kinds:\n%.3000s", page, status, body)
		}
	}
	_, body := get(t, f.url+"/console/dead-letters")
	counts := regexp.MustCompile(`<tr data-count="(\d+)">`).FindAllStringSubmatch(body, -1)
	if len(counts) != 5 || counts[0][1] != "3" {
		t.Fatalf("groups: %v\n%.3000s", counts, body)
	}
	first := body[strings.Index(body, `<tr data-count="3">`):]
	first = first[:strings.Index(first, "</tr>")]
	if !strings.Contains(first, "chabok") || !strings.Contains(first, "INVALID_PARAMETERS") {
		t.Errorf("the largest group: %s", first)
	}
	href := regexp.MustCompile(`href="([^"]+)"`).FindStringSubmatch(first)[1]
	_, narrowed := get(t, f.url+strings.ReplaceAll(href, "&amp;", "&"))
	if !strings.Contains(narrowed, `data-total="3"`) {
		t.Errorf("the group's link (%s) lists:\n%.3000s", href, narrowed)
	}
	// A filter narrows the total and the groups alike.
	if _, body := get(t, f.url+"/console/dead-letters?sink=kenar"); !strings.Contains(body, `data-total="1"`) || strings.Contains(body, `id="groups"`) {
		t.Errorf("one sink's: %.3000s", body)
	}
}

// Issue 21: the sinks page counts each sink's dead letters waiting, read
// from the dead-letter stream (the deployment's, not this process's
// counters, which are 0 here: no dispatcher ran).
func TestSinksPageCountsDeadLettersWaiting(t *testing.T) {
	f := newFixture(t, token, 50)
	for _, page := range []string{"/console/sinks", "/console/sinks/rows"} {
		status, body := get(t, f.url+page)
		if status != http.StatusOK || !strings.Contains(body, `data-dead-letters="4"><a href="/console/dead-letters?sink=chabok">4</a>`) {
			t.Errorf("%s: %d, want chabok's 4 dead letters waiting:\n%.4000s", page, status, body)
		}
	}
}
