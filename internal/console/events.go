package console

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/chapar-dev/chapar/internal/deliveries"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/lookup"
)

// Events looks events up: what became of one at each sink, and the
// deliveries of a window (internal/lookup over the dispatcher's config,
// as dispatcher events show and list).
type Events interface {
	Show(ctx context.Context, id string) (lookup.Report, error)
	List(ctx context.Context, f lookup.Filter, each func(lookup.Entry) bool) error
	// Records are an event's delivery records, each sink's latest, of
	// those stored since since (the zero time: all).
	Records(ctx context.Context, id string, since time.Time) ([]deliveries.Record, error)
}

// eventsForm is the events page's query: an id to show, or a list's
// filter.
type eventsForm struct {
	ID, Since, Until, Sink, Type, Name, Subject, State string
}

func readEventsForm(q url.Values) eventsForm {
	return eventsForm{ID: q.Get("id"), Since: q.Get("since"), Until: q.Get("until"), Sink: q.Get("sink"),
		Type: q.Get("type"), Name: q.Get("name"), Subject: q.Get("subject"), State: q.Get("state")}
}

// Href is the list page with this filter, from the cursor after.
func (f eventsForm) Href(after uint64) string {
	q := url.Values{}
	for k, v := range map[string]string{"since": f.Since, "until": f.Until, "sink": f.Sink, "type": f.Type, "name": f.Name, "subject": f.Subject, "state": f.State} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if after > 0 {
		q.Set("after", strconv.FormatUint(after, 10))
	}
	return Prefix + "events?" + q.Encode()
}

type eventsData struct {
	Form    eventsForm
	Error   string
	Report  *lookup.Report
	Rows    []lookup.Entry
	After   uint64
	Next    uint64
	States  []lookup.State
	Enabled bool
}

// eventsPage shows one event (?id=) or a page of a window's deliveries.
// Like the dead-letter pages it reads with direct gets and streams: a page
// and one more, whatever the stream holds.
func (c *Console) eventsPage(w http.ResponseWriter, r *http.Request) {
	d := eventsData{Form: readEventsForm(r.URL.Query()), Enabled: c.opts.Events != nil,
		States: []lookup.State{lookup.Delivered, lookup.Retrying, lookup.DeadLettered}}
	title := "Events"
	if !d.Enabled {
		c.render(w, r, http.StatusOK, "events", "layout", c.page(title, "events", d))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	if d.Form.ID != "" {
		rep, err := c.opts.Events.Show(ctx, d.Form.ID)
		if err != nil {
			c.failErr(w, r, "looking the event up", err)
			return
		}
		d.Report = &rep
		status := http.StatusOK
		if !rep.Found() {
			status = http.StatusNotFound
		}
		c.render(w, r, status, "events", "layout", c.page("Event "+d.Form.ID, "events", d))
		return
	}
	if d.Form.Since == "" {
		d.Form.Since = "1h"
	}
	f := lookup.Filter{Sink: d.Form.Sink, Type: d.Form.Type, Name: d.Form.Name, Subject: d.Form.Subject, State: lookup.State(d.Form.State)}
	var err error
	if f.Since, err = dlq.ParseWhen(d.Form.Since, time.Now()); err == nil {
		f.Until, err = dlq.ParseWhen(d.Form.Until, time.Now())
	}
	if a := r.URL.Query().Get("after"); err == nil && a != "" {
		f.After, err = strconv.ParseUint(a, 10, 64)
	}
	if err != nil {
		d.Error = err.Error()
		c.render(w, r, http.StatusBadRequest, "events", "layout", c.page(title, "events", d))
		return
	}
	d.After = f.After
	n := c.opts.PageSize
	if err := c.opts.Events.List(ctx, f, func(e lookup.Entry) bool {
		d.Rows = append(d.Rows, e)
		return len(d.Rows) <= n
	}); err != nil {
		c.failErr(w, r, "listing deliveries", err)
		return
	}
	if len(d.Rows) > n {
		d.Rows = d.Rows[:n]
		d.Next = d.Rows[n-1].Seq
	}
	c.render(w, r, http.StatusOK, "events", "layout", c.page(title, "events", d))
}
