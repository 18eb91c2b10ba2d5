package main

import (
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// Issue 21: redelivery from the console in a browser, against `dispatcher
// run` (its console wired to the run's config): the Redeliver page's dry
// run counts the window, the confirm with the token starts the job, its
// page (polled by htmx) ends done, and each event of the window reaches
// the vendor again.
func TestConsoleRedeliverInBrowser(t *testing.T) {
	exe := findChromium(t)
	e := testenv.New(t)
	base := consoleDispatcher(t, e)
	vendor := e.Emu.Vendor(emulator.Chabok)
	since := time.Now()
	users := []string{"u-redeliver-0", "u-redeliver-1"}
	for _, u := range users {
		e.Publish(testenv.Track(t, "order_paid", u))
	}
	for _, u := range users {
		testenv.Eventually(t, 20*time.Second, "first delivery for "+u, func() bool { return deliveredTo(vendor, u) == 1 })
	}
	bctx := browser(t, exe)
	pages := newPageChecks(t)
	q := url.Values{"sink": {"chabok"}, "since": {since.UTC().Format(time.RFC3339Nano)}}
	step(t, bctx, "the redeliver page's dry run",
		chromedp.Navigate(base+"/console/redeliver?"+q.Encode()),
		chromedp.WaitVisible(chromedp.CSS(`#redeliver-form`)),
	)
	if m := read(t, bctx, "the count", chromedp.AttributeValue(chromedp.CSS(`#matched`), "data-matched")); m.Value != "2" {
		t.Errorf("dry run matched %q, want 2", m.Value)
	}
	pages.check(bctx, "redeliver-dry-run")
	for _, u := range users {
		if n := deliveredTo(vendor, u); n != 1 {
			t.Fatalf("the dry run sent: %s delivered %d times", u, n)
		}
	}
	step(t, bctx, "redeliver with the token",
		chromedp.SetValue(chromedp.CSS(`#redeliver-form input[name="token"]`), consoleToken),
		chromedp.Click(chromedp.CSS(`#redeliver-confirm`)),
		chromedp.WaitVisible(chromedp.CSS(`#job-done`)),
	)
	if done := read(t, bctx, "the job's end", chromedp.Text(chromedp.CSS(`#job-done`))); !strings.Contains(done, "re-sent 2 of the 2 events") {
		t.Errorf("job: %q", done)
	}
	pages.check(bctx, "redeliver-done")
	for _, u := range users {
		testenv.Eventually(t, 20*time.Second, "the redelivery for "+u, func() bool { return deliveredTo(vendor, u) == 2 })
	}
}
