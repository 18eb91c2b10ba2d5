package console

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/metrics"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/topology"
)

// readTimeout bounds a page's reads from JetStream: a page that cannot be
// read in time says so rather than hold the connection.
const readTimeout = 20 * time.Second

func (c *Console) sinkStatuses(w http.ResponseWriter, r *http.Request) ([]sinkRow, bool) {
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	sinks, err := c.opts.Sinks.Sinks(ctx)
	if err != nil {
		c.failErr(w, r, "reading the sinks' status", err)
		return nil, false
	}
	counts, cerr := c.sinkCounts(ctx)
	rows := make([]sinkRow, len(sinks))
	for i, s := range sinks {
		rows[i] = sinkRow{SinkStatus: s, Healthy: s.Breaker == "closed", DeadLetters: counts[s.Name], DeadLettersUnknown: cerr != nil}
	}
	return rows, true
}

// sinksData is the sinks page: the table, and whether it offers pause and
// resume.
type sinksData struct {
	Rows     []sinkRow
	Pausable bool
	Mutating bool // the admin token is configured
}

func (c *Console) sinksPage(w http.ResponseWriter, r *http.Request) {
	sinks, ok := c.sinkStatuses(w, r)
	if ok {
		d := sinksData{Rows: sinks, Pausable: c.opts.Pauses != nil, Mutating: c.MutationsEnabled()}
		c.render(w, r, http.StatusOK, "sinks", "layout", c.page("Sinks", "sinks", d))
	}
}

// pauseSink checks the admin token and records a configured sink paused
// or resumed for every dispatcher (dispatcher sinks pause and resume),
// then sends the browser back to the sinks page, which shows the state.
func (c *Console) pauseSink(w http.ResponseWriter, r *http.Request) {
	if c.opts.Pauses == nil {
		c.fail(w, r, http.StatusNotFound, "Pausing sinks is not available in this console.")
		return
	}
	if !c.MutationsEnabled() {
		c.fail(w, r, http.StatusForbidden, "Pause and resume are disabled: no admin token is configured (set admin.token_file or $CHAPAR_ADMIN_TOKEN and restart), "+
			"or use dispatcher sinks pause and resume.")
		return
	}
	if err := r.ParseForm(); err != nil {
		c.fail(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	if !c.tokenOK(r.PostForm.Get("token")) {
		c.log.Warn("pause or resume refused: wrong or missing admin token", zap.String("remote", r.RemoteAddr))
		c.fail(w, r, http.StatusForbidden, "Refused: the admin token is missing or wrong. Nothing was changed.")
		return
	}
	var paused bool
	switch action := r.PostForm.Get("action"); action {
	case "pause":
		paused = true
	case "resume":
	default:
		c.fail(w, r, http.StatusBadRequest, "action: use pause or resume.")
		return
	}
	sink := r.PostForm.Get("sink")
	sinks, ok := c.sinkStatuses(w, r)
	if !ok {
		return
	}
	names := make([]string, len(sinks))
	for i, s := range sinks {
		names[i] = s.Name
	}
	if !slices.Contains(names, sink) {
		// The console pauses what this dispatcher runs; any other name
		// (a sink not rolled out yet) is dispatcher sinks pause's.
		c.fail(w, r, http.StatusBadRequest, "No sink "+strconv.Quote(sink)+" is configured; the configured sinks are "+strings.Join(names, ", ")+
			". To pause another, use dispatcher sinks pause NAME.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	if err := c.opts.Pauses.SetPaused(ctx, sink, paused, "console"); err != nil {
		c.failErr(w, r, "recording the pause", err)
		return
	}
	c.log.Info("sink paused or resumed from the console", zap.String("sink", sink), zap.Bool("paused", paused), zap.String("remote", r.RemoteAddr))
	http.Redirect(w, r, Prefix+"sinks", http.StatusSeeOther)
}

// sinksRows is the table body alone, which the sinks page refreshes with
// htmx every few seconds.
func (c *Console) sinksRows(w http.ResponseWriter, r *http.Request) {
	sinks, ok := c.sinkStatuses(w, r)
	if ok {
		c.render(w, r, http.StatusOK, "sinks", "rows", sinks)
	}
}

// sinkRow is a sink's status with what the template shows computed.
type sinkRow struct {
	metrics.SinkStatus
	Healthy bool
	// DeadLetters are the sink's dead letters waiting in the stream,
	// the deployment's (waiting.go); unknown when they cannot be read.
	DeadLetters        int
	DeadLettersUnknown bool
}

// listData is a dead-letter list page.
type listData struct {
	Form    filterForm
	Error   string // a bad filter
	Rows    []*dlq.Record
	After   uint64 // this page's cursor
	Next    uint64 // the next page's cursor; 0: no next page
	// Total is how many dead letters match the filter (every page);
	// Groups counts them by sink, reason, status and vendor code, the
	// largest first, so 125 identical failures are one row to act on.
	Total  int
	Groups []deadLetterGroup
	Reasons []outcome.Reason
	// Hint says a sink filter that matched nothing names no configured
	// sink, and which are.
	Hint string
}

// deadLettersPage lists a page of dead letters matching the filter, from
// the cursor (?after=SEQ) on. It streams: it stops reading once it has a
// page and one more (to know whether there is a next page), so its memory
// is a page whatever the stream holds.
func (c *Console) deadLettersPage(w http.ResponseWriter, r *http.Request) {
	d := listData{Form: readFilterForm(r.URL.Query()), Reasons: outcome.Reasons()}
	f, err := d.Form.Filter(time.Now())
	if err != nil {
		d.Error = err.Error()
		c.render(w, r, http.StatusBadRequest, "dead-letters", "layout", c.page("Dead letters", "dead-letters", d))
		return
	}
	if a := r.URL.Query().Get("after"); a != "" {
		if d.After, err = strconv.ParseUint(a, 10, 64); err != nil {
			d.Error = "after: " + strconv.Quote(a) + " is not a stream sequence; follow the Next link, or leave it out for the first page"
			c.render(w, r, http.StatusBadRequest, "dead-letters", "layout", c.page("Dead letters", "dead-letters", d))
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	// One read of every match: the total and the groups count them all,
	// the page keeps its own from the cursor on (and one more, to know
	// there is a next page). The rows are a page whatever the stream
	// holds; the groups are as many as distinct failures.
	n, after := c.opts.PageSize, d.After
	groups := map[deadLetterGroup]int{}
	err = c.opts.DeadLetters.Each(ctx, f, func(rec *dlq.Record) bool {
		d.Total++
		groups[deadLetterGroup{Sink: rec.Sink, Reason: rec.Reason, Status: rec.Status, Code: rec.Code}]++
		if rec.Seq > after && len(d.Rows) <= n {
			d.Rows = append(d.Rows, rec)
		}
		return true
	})
	if err != nil {
		c.failErr(w, r, "reading dead letters", err)
		return
	}
	d.Groups = sortGroups(groups, d.Form)
	if len(d.Rows) > n {
		d.Rows = d.Rows[:n]
		d.Next = d.Rows[n-1].Seq
	}
	if len(d.Rows) == 0 {
		d.Hint = c.unknownSinkHint(ctx, f.Sink)
	}
	c.render(w, r, http.StatusOK, "dead-letters", "layout", c.page("Dead letters", "dead-letters", d))
}

// unknownSinkHint says that a sink a filter names is not configured, and
// which are: a filter that matched nothing is most often a typo, which
// would otherwise read as "that sink has no dead letters". Empty for a
// configured sink, - (invalid envelopes), no sink, or sinks that cannot
// be read.
func (c *Console) unknownSinkHint(ctx context.Context, sink string) string {
	if sink == "" || sink == dlq.NoSink {
		return ""
	}
	sinks, err := c.opts.Sinks.Sinks(ctx)
	if err != nil {
		return ""
	}
	names := make([]string, 0, len(sinks))
	for _, s := range sinks {
		if s.Name == sink {
			return ""
		}
		names = append(names, s.Name)
	}
	if len(names) == 0 {
		return "No sink " + strconv.Quote(sink) + " is configured: this dispatcher has none."
	}
	return "No sink " + strconv.Quote(sink) + " is configured; the configured sinks are " + strings.Join(names, ", ") + "."
}

// entryData is one dead letter's page.
type entryData struct {
	*dlq.Record
	Envelope string // indented when it is JSON
	Headers  []field
	Replay   bool // its reason allows a replay
	// Tries are the logged attempts, numbered across runs; Runs is the
	// replay history they tell: the first delivery, then each replay.
	Tries []attemptRow
	Runs  []runRow
	// Partition and Sequence are the origin decoded: where the event was
	// in the events streams, as nats stream get finds it. Partitioned
	// says whether to show the partition (streams.partitions > 1).
	Partition   int
	Sequence    uint64
	Partitioned bool
}

// attemptRow is one logged vendor request.
type attemptRow struct {
	dlq.Attempt
	N int // its number among all attempts of the event, from 1
}

// runRow is one run of the delivery: the first (Replay 0) or a replay,
// as far as the log still holds its attempts.
type runRow struct {
	Replay      int
	Logged      int
	First, Last time.Time
	Ended       dlq.Attempt // its last logged attempt
	Current     bool        // the run that ended in this dead letter
}

// attemptRows numbers a record's logged attempts and groups them by run.
// The log keeps the last attempts only (dlq.MaxLoggedAttempts), so the
// oldest run listed may be partial and earlier ones absent.
func attemptRows(rec *dlq.Record) ([]attemptRow, []runRow) {
	var tries []attemptRow
	var runs []runRow
	for i, a := range rec.Log.Attempts {
		tries = append(tries, attemptRow{Attempt: a, N: rec.Log.Dropped() + i + 1})
		if len(runs) == 0 || runs[len(runs)-1].Replay != a.Replay {
			runs = append(runs, runRow{Replay: a.Replay, First: a.At})
		}
		r := &runs[len(runs)-1]
		r.Logged++
		r.Last, r.Ended = a.At, a
	}
	if len(runs) > 0 {
		runs[len(runs)-1].Current = runs[len(runs)-1].Replay == rec.Replays
	}
	return tries, runs
}

func (c *Console) deadLetterPage(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil || seq == 0 {
		c.fail(w, r, http.StatusNotFound, "No such dead letter: "+strconv.Quote(r.PathValue("seq"))+" is not a stream sequence.")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	rec, err := c.opts.DeadLetters.Get(ctx, seq)
	if errors.Is(err, dlq.ErrNotFound) {
		c.fail(w, r, http.StatusNotFound, "No dead letter "+strconv.FormatUint(seq, 10)+": it was replayed or purged, or never existed.")
		return
	}
	if err != nil {
		c.failErr(w, r, "reading the dead letter", err)
		return
	}
	d := entryData{Record: rec, Envelope: string(rec.Data), Replay: rec.Sink != dlq.NoSink && rec.Reason.Replayable()}
	d.Tries, d.Runs = attemptRows(rec)
	d.Partition, d.Sequence = topology.SplitOrigin(rec.Origin)
	d.Partitioned = c.opts.Partitions > 1
	var b bytes.Buffer
	if json.Indent(&b, rec.Data, "", "  ") == nil {
		d.Envelope = b.String()
	}
	for k, v := range rec.Header {
		d.Headers = append(d.Headers, field{k, strings.Join(v, ", ")})
	}
	sort.Slice(d.Headers, func(i, j int) bool { return d.Headers[i].Name < d.Headers[j].Name })
	c.render(w, r, http.StatusOK, "dead-letter", "layout", c.page("Dead letter "+strconv.FormatUint(seq, 10), "dead-letters", d))
}

// actionsData is the dry run of a filter, with the confirm forms.
type actionsData struct {
	Mutating bool
	Form     filterForm
	Error    string
	Result   dlq.ReplayResult
	Hint     string // as listData's
}

// actionsPage is the dry run: how many dead letters the filter matches and
// a sample, computed by the replay service itself (DryRun), then the
// confirm forms.
func (c *Console) actionsPage(w http.ResponseWriter, r *http.Request) {
	d := actionsData{Mutating: c.MutationsEnabled(), Form: readFilterForm(r.URL.Query())}
	f, err := d.Form.Filter(time.Now())
	if err != nil {
		d.Error = err.Error()
		c.render(w, r, http.StatusBadRequest, "actions", "layout", c.page("Replay or purge", "dead-letters", d))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), readTimeout)
	defer cancel()
	if d.Result, err = c.opts.DeadLetters.Replay(ctx, f, dlq.ReplayOptions{DryRun: true}); err != nil {
		c.failErr(w, r, "counting the matching dead letters", err)
		return
	}
	if d.Result.Matched == 0 {
		d.Hint = c.unknownSinkHint(ctx, f.Sink)
	}
	c.render(w, r, http.StatusOK, "actions", "layout", c.page("Replay or purge", "dead-letters", d))
}

// startAction checks the admin token and starts a replay or purge job,
// then sends the browser to its progress page.
func (c *Console) startAction(w http.ResponseWriter, r *http.Request) {
	if !c.MutationsEnabled() {
		c.fail(w, r, http.StatusForbidden, "Replay and purge are disabled: no admin token is configured (set admin.token_file or $CHAPAR_ADMIN_TOKEN and restart).")
		return
	}
	if err := r.ParseForm(); err != nil {
		c.fail(w, r, http.StatusBadRequest, "The form could not be read.")
		return
	}
	if !c.tokenOK(r.PostForm.Get("token")) {
		c.log.Warn("replay or purge refused: wrong or missing admin token", zap.String("remote", r.RemoteAddr))
		c.fail(w, r, http.StatusForbidden, "Refused: the admin token is missing or wrong. Nothing was changed.")
		return
	}
	form := readFilterForm(r.PostForm)
	f, err := form.Filter(time.Now())
	if err != nil {
		c.fail(w, r, http.StatusBadRequest, err.Error())
		return
	}
	// The dry run's last match: the job acts on what the page counted,
	// none written since (fewer, if some were replayed or purged
	// meanwhile: the job's page says how many it did).
	if t := r.PostForm.Get("through"); t != "" {
		if f.Through, err = strconv.ParseUint(t, 10, 64); err != nil {
			c.fail(w, r, http.StatusBadRequest, "through: "+strconv.Quote(t)+" is not a stream sequence; start again from the dry run.")
			return
		}
	}
	spec := jobSpec{Action: r.PostForm.Get("action"), Filter: f, Form: form}
	switch spec.Action {
	case actionReplay:
		if spec.Rate, err = formFloat(r.PostForm.Get("rate")); err != nil {
			c.fail(w, r, http.StatusBadRequest, "rate: "+err.Error())
			return
		}
		if spec.Limit, err = formInt(r.PostForm.Get("limit")); err != nil {
			c.fail(w, r, http.StatusBadRequest, "limit: "+err.Error())
			return
		}
	case actionPurge:
	default:
		c.fail(w, r, http.StatusBadRequest, "action: use replay or purge.")
		return
	}
	j, err := c.start(spec)
	if errors.Is(err, errBusy) {
		c.fail(w, r, http.StatusConflict, "Another replay or purge is running; wait for it to finish (see its page) and try again.")
		return
	}
	if err != nil {
		c.failErr(w, r, "starting the job", err)
		return
	}
	c.log.Info("job started", zap.String("job", j.ID), zap.String("action", spec.Action), zap.String("filter", form.Query()))
	http.Redirect(w, r, Prefix+"jobs/"+j.ID, http.StatusSeeOther)
}

func formFloat(s string) (float64, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return 0, errors.New(strconv.Quote(s) + " is not a number of replays a second; use 0 (as fast as JetStream confirms) or more")
	}
	return v, nil
}

func formInt(s string) (int, error) {
	if s == "" {
		return 0, nil
	}
	v, err := strconv.Atoi(s)
	if err != nil || v < 0 {
		return 0, errors.New(strconv.Quote(s) + " is not a count; use 0 (all matching) or more")
	}
	return v, nil
}

func (c *Console) jobPage(w http.ResponseWriter, r *http.Request) {
	j := c.jobs.get(r.PathValue("id"))
	if j == nil {
		c.fail(w, r, http.StatusNotFound, "No such job: jobs are kept in memory until the dispatcher restarts.")
		return
	}
	c.render(w, r, http.StatusOK, "job", "layout", c.page("Job "+j.ID, "jobs", c.jobView(r.Context(), j)))
}

// jobProgress is the progress fragment the job page polls with htmx; a
// finished job's fragment stops the polling.
func (c *Console) jobProgress(w http.ResponseWriter, r *http.Request) {
	j := c.jobs.get(r.PathValue("id"))
	if j == nil {
		c.fail(w, r, http.StatusNotFound, "No such job.")
		return
	}
	c.render(w, r, http.StatusOK, "job", "progress", c.jobView(r.Context(), j))
}

// deadLetterGroup is one kind of failure: dead letters of one sink with
// the same reason, status and vendor code.
type deadLetterGroup struct {
	Sink   string
	Reason outcome.Reason
	Status int
	Code   string
	Count  int
	// Href lists the group's dead letters (the page's filter narrowed).
	Href string
}

// sortGroups orders the groups largest first, then by sink, reason,
// status and code, each linking to its dead letters.
func sortGroups(counts map[deadLetterGroup]int, f filterForm) []deadLetterGroup {
	out := make([]deadLetterGroup, 0, len(counts))
	for g, n := range counts {
		g.Count = n
		narrowed := f
		narrowed.Sink, narrowed.Reason, narrowed.Code = g.Sink, string(g.Reason), g.Code
		narrowed.Status = ""
		if g.Status != 0 {
			narrowed.Status = strconv.Itoa(g.Status)
		}
		g.Href = narrowed.Href(Prefix+"dead-letters", 0)
		out = append(out, g)
	}
	slices.SortFunc(out, func(a, b deadLetterGroup) int {
		return cmp.Or(cmp.Compare(b.Count, a.Count), cmp.Compare(a.Sink, b.Sink), cmp.Compare(a.Reason, b.Reason),
			cmp.Compare(a.Status, b.Status), cmp.Compare(a.Code, b.Code))
	})
	return out
}

// jobView is a job as its page shows it: a finished replay with what
// became of its events since.
func (c *Console) jobView(ctx context.Context, j *job) jobView {
	v := j.snapshot()
	if v.Action == actionReplay && !v.Running {
		rctx, cancel := context.WithTimeout(ctx, readTimeout)
		defer cancel()
		v.Outcome, v.HasOutcome = c.outcome(rctx, j)
	}
	return v
}

// jobsPage lists the jobs this console started, newest first.
func (c *Console) jobsPage(w http.ResponseWriter, r *http.Request) {
	d := struct {
		Jobs []jobView
		Keep int
	}{Keep: c.opts.KeepJobs}
	for _, j := range c.jobs.all() {
		d.Jobs = append(d.Jobs, j.snapshot())
	}
	c.render(w, r, http.StatusOK, "jobs", "layout", c.page("Jobs", "jobs", d))
}
