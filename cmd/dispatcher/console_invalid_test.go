package main

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/nats-io/nats.go"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// In a real browser against `dispatcher run`: an invalid envelope's page
// says it has no id or type and that no vendor request was made, and its
// purge link purges it alone, not every invalid envelope; a malformed
// sink filter is a 400 that says why; the sinks page says what is waiting
// to retry now apart from the running total.
func TestConsoleInvalidEnvelopeInBrowser(t *testing.T) {
	exe := findChromium(t)
	e := testenv.New(t)
	base := consoleDispatcher(t, e)
	bctx := browser(t, exe)
	pages := newPageChecks(t)

	for _, junk := range []string{"junk-1", "junk-2"} {
		e.PublishRaw(e.Topo.EventSubject("chapar.track"), junk, []byte(junk))
	}
	invalid := dlq.Filter{Reason: outcome.InvalidEnvelope}
	testenv.Eventually(t, 20*time.Second, "two invalid envelopes dead-lettered", func() bool { return count(t, e, invalid) == 2 })

	step(t, bctx, "open the first invalid envelope",
		chromedp.Navigate(base+"/console/dead-letters?reason=invalid_envelope"),
		chromedp.WaitVisible(chromedp.CSS(`#dead-letters tr[data-seq] a`)),
		chromedp.Click(chromedp.CSS(`#dead-letters tr[data-seq] a`)),
		chromedp.WaitVisible(chromedp.CSS(`#envelope`)),
	)
	event := read(t, bctx, "read the event", chromedp.Text(chromedp.CSS(`#event`)))
	if !strings.HasPrefix(event, "no id or type could be read from it · published on chapar.events.") || strings.Contains(event, "· ·") {
		t.Errorf("the invalid envelope's event line: %q", event)
	}
	noAttempts := read(t, bctx, "read the attempts", chromedp.Text(chromedp.CSS(`#no-attempts`)))
	if !strings.Contains(noAttempts, "No vendor request was made") || strings.Contains(noAttempts, "recorded before") {
		t.Errorf("the invalid envelope's attempts: %q", noAttempts)
	}
	pages.check(bctx, "invalid-envelope")

	step(t, bctx, "its purge link: a dry run of it alone",
		chromedp.Click(chromedp.CSS(`#record-actions a`)),
		chromedp.WaitVisible(chromedp.CSS(`#purge-form`)),
	)
	if matched := read(t, bctx, "read the count", chromedp.AttributeValue(chromedp.CSS(`#matched`), "data-matched")).Value; matched != "1" {
		t.Errorf("the purge link's dry run matched %q, want 1 (this dead letter alone)", matched)
	}
	step(t, bctx, "purge it",
		chromedp.SetValue(chromedp.CSS(`#purge-form input[name="token"]`), consoleToken),
		chromedp.Click(chromedp.CSS(`#purge-confirm`)),
		chromedp.WaitVisible(chromedp.CSS(`#job-done`)),
	)
	if done := read(t, bctx, "read the job's end", chromedp.Text(chromedp.CSS(`#job-done`))); !strings.Contains(done, "purged 1 dead letters") {
		t.Errorf("job: %q", done)
	}
	if n := count(t, e, invalid); n != 1 {
		t.Errorf("%d invalid envelopes left, want 1", n)
	}

	step(t, bctx, "a malformed sink filter",
		chromedp.Navigate(base+"/console/dead-letters?sink=%3Cscript%3Ealert(1)%3C%2Fscript%3E"),
		chromedp.WaitVisible(chromedp.CSS(`#error`)),
	)
	if msg := read(t, bctx, "read the error", chromedp.Text(chromedp.CSS(`#error`))); !strings.Contains(msg, `sink: "<script>alert(1)</script>" is not a sink name`) {
		t.Errorf("malformed filter: %q", msg)
	}
	if status, _ := httpGet(t, base+"/console/dead-letters?sink=%3E"); status != 400 {
		t.Errorf("sink=>: status %d, want 400", status)
	}

	// Two retries scheduled an hour on: waiting to retry now, though none
	// was counted by this process.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, key := range []string{"browser-1", "browser-2"} {
		msg := nats.NewMsg(e.Topo.RetryWaitSubject("chabok", key))
		topology.Schedule(msg.Header, time.Now().Add(time.Hour), e.Topo.RetryDueSubject("chabok"))
		if _, err := e.JS.PublishMsg(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	step(t, bctx, "the sinks page",
		chromedp.Navigate(base+"/console/sinks"),
		chromedp.WaitVisible(chromedp.CSS(`tr[data-sink="chabok"] td[data-retrying-now="2"]`)),
	)
	// As shown: the style sheet sets headings in capitals.
	heads := strings.ToLower(read(t, bctx, "read the headings", chromedp.Text(chromedp.CSS(`#sinks thead`))))
	for _, want := range []string{"retrying now", "retries since start", "delivered since start", "dead-lettered since start"} {
		if !strings.Contains(heads, want) {
			t.Errorf("the sinks table's headings lack %q: %q", want, heads)
		}
	}
	pages.check(bctx, "sinks-retrying")
}
