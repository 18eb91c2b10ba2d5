package main

import (
	"fmt"
	"strings"
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

// Issue 22: what a producer chooses (destinations, types, sources) must not
// mint metric series. A dispatcher takes one event of each kind (so every
// series they touch exists), then hundreds of events with distinct
// well-formed destinations, types and sources; a real /metrics scrape has
// fewer than 50 series more (before: one chapar_dead_letters_total series
// per unknown destination, several hundred).
func TestProducersCannotMintMetricSeries(t *testing.T) {
	e := testenv.New(t)
	admin := testenv.FreeAddr(t)
	startRun(t, e, admin, fmt.Sprintf(`
admin: {listen: %q}
sinks:
  - {name: chabok, vendor: chabok, base_url: %s, settings: {app_id: demoapp, access_token: demo-chabok-token}}
routes:
  - sinks: [chabok]
`, admin, e.URL[emulator.Chabok]))

	publish := func(i int) {
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
	settled(1)
	_, body := httpGet(t, "http://"+admin+"/metrics")
	before := chaparSeries(body)

	const n = 300
	for i := 1; i <= n; i++ {
		publish(i)
	}
	settled(n + 1)
	_, body = httpGet(t, "http://"+admin+"/metrics")
	var added []string
	for s := range chaparSeries(body) {
		if !before[s] {
			added = append(added, s)
		}
	}
	t.Logf("%d events added %d chapar_ series", 3*n, len(added))
	if len(added) >= 50 {
		t.Errorf("%d events with distinct destinations, types and sources added %d chapar_ series (want < 50), such as:\n%s",
			3*n, len(added), strings.Join(added[:min(len(added), 5)], "\n"))
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
