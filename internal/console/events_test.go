package console_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/console"
	"github.com/chapar-dev/chapar/internal/deliveries"
	"github.com/chapar-dev/chapar/internal/lookup"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// The events page: one event's state per sink (?id=), a window's
// deliveries paged, an id found nowhere a 404 saying so, a bad time a 400,
// and, with delivery records off, a page saying so.
func TestEventsPage(t *testing.T) {
	dep := &lookup.Deployment{}
	f := newFixture(t, token, 2, func(o *console.Options) { o.Events = deploymentRef{dep} })
	e := f.env
	cfg := config.Default()
	cfg.Streams, cfg.Sinks = e.Streams, []config.Sink{{Name: "chabok"}}
	dep.JS, dep.Config = e.JS, cfg
	for i, id := range []string{"evt-a", "evt-b", "evt-c"} {
		r := deliveries.Record{EventID: id, Type: "chapar.track", Name: "order_paid", Subject: "u1", Sink: "chabok",
			State: deliveries.Delivered, At: time.Now().UTC(), Attempts: 1, Latency: time.Millisecond, Stream: e.Topo.EventsStream(), Seq: uint64(i + 1)}
		b, _ := json.Marshal(r)
		if err := e.NC.Publish(deliveries.Subject(e.Topo.Prefix(), id), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	var status int
	var body string
	testenv.Eventually(t, 10*time.Second, "evt-b's page", func() bool {
		status, body = get(t, f.url+"/console/events?id=evt-b")
		return status == http.StatusOK
	})
	if !strings.Contains(body, `data-sink="chabok" data-state="delivered"`) {
		t.Errorf("evt-b's page:\n%.3000s", body)
	}
	status, body = get(t, f.url+"/console/events?since=1h")
	if status != http.StatusOK || !strings.Contains(body, "evt-a") || !strings.Contains(body, "evt-b") || strings.Contains(body, "evt-c") || !strings.Contains(body, `id="next"`) {
		t.Errorf("first page of 2: %d\n%.3000s", status, body)
	}
	i := strings.Index(body, `id="next"`)
	href := body[strings.LastIndex(body[:i], `href="`)+6:]
	href = strings.ReplaceAll(href[:strings.IndexByte(href, '"')], "&amp;", "&")
	if _, body = get(t, f.url+href); !strings.Contains(body, "evt-c") || strings.Contains(body, "evt-a") {
		t.Errorf("second page (%s):\n%.3000s", href, body)
	}
	if status, body = get(t, f.url+"/console/events?id="+url.QueryEscape("no-such-event")); status != http.StatusNotFound || !strings.Contains(body, `id="not-found"`) {
		t.Errorf("an unknown id: %d\n%.2000s", status, body)
	}
	if status, body = get(t, f.url+"/console/events?since=yesterday"); status != http.StatusBadRequest || !strings.Contains(body, "neither an RFC 3339 time nor a duration") {
		t.Errorf("a bad since: %d\n%.2000s", status, body)
	}

	off := newFixture(t, token, 2)
	if status, body = get(t, off.url+"/console/events"); status != http.StatusOK || !strings.Contains(body, `id="disabled"`) {
		t.Errorf("records off: %d\n%.2000s", status, body)
	}
}

// deploymentRef is a lookup.Deployment filled in once the fixture's
// server exists.
type deploymentRef struct{ d *lookup.Deployment }

func (r deploymentRef) Show(ctx context.Context, id string) (lookup.Report, error) {
	return r.d.Show(ctx, id)
}

func (r deploymentRef) Records(ctx context.Context, id string, since time.Time) ([]deliveries.Record, error) {
	return r.d.Records(ctx, id, since)
}

func (r deploymentRef) List(ctx context.Context, f lookup.Filter, each func(lookup.Entry) bool) error {
	return r.d.List(ctx, f, each)
}
