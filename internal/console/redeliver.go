package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/redeliver"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Redeliveries re-send a window of events to one sink, as dispatcher
// sinks redeliver does (*redeliver.Runner over the dispatcher's config).
type Redeliveries interface {
	Redeliver(ctx context.Context, sink string, f redeliver.Filter, dryRun bool, progress func(redeliver.Result)) (redeliver.Result, error)
}

const actionRedeliver = "redeliver"

// redeliverForm is a redelivery as the page carries it: the CLI's flags,
// in the query string of the dry run and hidden fields of the confirm
// form.
type redeliverForm struct {
	Sink, Since, Until, Type, Name, Subject string
	All                                     bool
}

func readRedeliverForm(v url.Values) redeliverForm {
	g := func(k string) string { return strings.TrimSpace(v.Get(k)) }
	return redeliverForm{Sink: g("sink"), Since: g("since"), Until: g("until"), Type: g("type"), Name: g("name"),
		Subject: g("subject"), All: g("all") == "on" || g("all") == "true"}
}

// filter is the redelivery the form says; a bad value is an error naming
// its field.
func (f redeliverForm) filter(now time.Time) (redeliver.Filter, error) {
	out := redeliver.Filter{Type: f.Type, Name: f.Name, Subject: f.Subject, All: f.All}
	if !envelope.IsSinkName(f.Sink) {
		return out, fmt.Errorf("sink: %q is not a sink name; use one from the sinks page", f.Sink)
	}
	var err error
	if out.Since, err = dlq.ParseWhen(f.Since, now); err != nil {
		return out, fmt.Errorf("since: %w", err)
	}
	if out.Until, err = dlq.ParseWhen(f.Until, now); err != nil {
		return out, fmt.Errorf("until: %w", err)
	}
	if out.Until.IsZero() {
		out.Until = now // the confirm form carries it: the job re-sends the window counted
	}
	return out, out.Validate()
}

// redeliverData is the redelivery page: the form, and once it names a
// sink and a start, the dry run and the confirm form.
type redeliverData struct {
	Mutating  bool
	Available bool
	Form      redeliverForm
	Error     string
	Counted   bool
	Result    redeliver.Result
}

// UntilValue is the dry run's window end, for the confirm form: the job
// re-sends the window the page counted, not one grown since.
func (d redeliverData) UntilValue() string { return d.Result.Until.UTC().Format(time.RFC3339Nano) }

func (c *Console) redeliverPage(w http.ResponseWriter, r *http.Request) {
	d := redeliverData{Mutating: c.MutationsEnabled(), Available: c.opts.Redeliveries != nil, Form: readRedeliverForm(r.URL.Query())}
	if !d.Available || d.Form.Sink == "" || d.Form.Since == "" {
		c.render(w, r, http.StatusOK, "redeliver", "layout", c.page("Redeliver", "redeliver", d))
		return
	}
	f, err := d.Form.filter(time.Now())
	if err != nil {
		d.Error = err.Error()
		c.render(w, r, http.StatusBadRequest, "redeliver", "layout", c.page("Redeliver", "redeliver", d))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	if d.Result, err = c.opts.Redeliveries.Redeliver(ctx, d.Form.Sink, f, true, nil); err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			c.failErr(w, r, "counting the window's events", err)
			return
		}
		d.Error = err.Error()
		c.render(w, r, http.StatusBadRequest, "redeliver", "layout", c.page("Redeliver", "redeliver", d))
		return
	}
	d.Counted = true
	c.render(w, r, http.StatusOK, "redeliver", "layout", c.page("Redeliver", "redeliver", d))
}

// startRedeliver checks the admin token and starts the redelivery job,
// then sends the browser to its progress page.
func (c *Console) startRedeliver(w http.ResponseWriter, r *http.Request) {
	if !c.MutationsEnabled() || c.opts.Redeliveries == nil {
		c.fail(w, r, http.StatusForbidden, "Redelivery is disabled: no admin token is configured (set admin.token_file or $CHAPAR_ADMIN_TOKEN and restart).")
		return
	}
	if err := r.ParseForm(); err != nil {
		c.fail(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	if !c.tokenOK(r.PostForm.Get("token")) {
		c.log.Warn("redelivery refused: wrong or missing admin token", zap.String("remote", r.RemoteAddr))
		c.fail(w, r, http.StatusForbidden, "Refused: the admin token is missing or wrong. Nothing was sent.")
		return
	}
	form := readRedeliverForm(r.PostForm)
	f, err := form.filter(time.Now())
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	j, err := c.start(jobSpec{Action: actionRedeliver, Redeliver: form, RedeliverFilter: f})
	if errors.Is(err, errBusy) {
		c.fail(w, r, http.StatusConflict, "Another job is running; wait for it to finish (see its page) and try again.")
		return
	}
	if err != nil {
		c.failErr(w, r, "starting the job", err)
		return
	}
	c.log.Info("job started", zap.String("job", j.ID), zap.String("action", actionRedeliver), zap.String("sink", form.Sink),
		zap.Time("since", f.Since), zap.Time("until", f.Until))
	http.Redirect(w, r, Prefix+"jobs/"+j.ID, http.StatusSeeOther)
}
