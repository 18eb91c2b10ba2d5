package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/app"
	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/opsevents"
	"github.com/chapar-dev/chapar/internal/outcome"
)

type cliDLQ struct {
	List   cliDLQList   `cmd:"" help:"Entries matching the filters, streamed as they are read."`
	Stats  cliDLQStats  `cmd:"" help:"Counts by sink, reason, status and vendor code."`
	Show   cliDLQShow   `cmd:"" help:"One entry (or every entry of an envelope id): why, history, and the original envelope."`
	Replay cliDLQReplay `cmd:"" help:"Put matching dead letters back on their failed sink's queue."`
	Purge  cliDLQPurge  `cmd:"" help:"Delete matching dead letters (asks first; --yes skips the question)."`
}

// dlqFlags are the filters and the connection every dlq command takes.
type dlqFlags struct {
	Config string         `help:"Config file (for its nats and streams settings)." placeholder:"FILE"`
	Sink   string         `help:"Only this sink (- for invalid envelopes)." group:"filters"`
	Status int            `help:"Only this HTTP status." group:"filters"`
	Code   string         `help:"Only this vendor error code, e.g. EVENT_TYPE_DOES_NOT_EXIST." group:"filters"`
	Reason outcome.Reason `help:"Only this reason, e.g. vendor_rejected, retries_exhausted." group:"filters"`
	ID     string         `help:"Only this envelope id." group:"filters"`
	Type   string         `help:"Only this event type, e.g. chapar.track." group:"filters"`
	After  uint64         `help:"Only dead letters after this stream sequence (the last SEQ a previous list printed: the next page)." group:"filters" placeholder:"SEQ"`
	Since  string         `help:"Only dead letters last attempted at or after this (RFC 3339, or a duration ago like 2h)." group:"filters" placeholder:"WHEN"`
	Until  string         `help:"Only dead letters last attempted at or before this." group:"filters" placeholder:"WHEN"`
	natsFlags

	filter dlq.Filter
	// sinks are the configured sinks' names (config file's), for the hint
	// when a --sink matches nothing.
	sinks []string
	// cfg and js are what store connected with (a replay reports itself
	// through them: opsevents.Store).
	cfg *config.Config
	js  jetstream.JetStream
}

// AfterApply turns the filter flags into a filter; a bad time is a usage
// error.
func (f *dlqFlags) AfterApply() error {
	f.filter = dlq.Filter{Sink: f.Sink, Status: f.Status, Code: f.Code, Reason: f.Reason, EventID: f.ID,
		EventType: f.Type, After: f.After}
	var err error
	if f.filter.Since, err = dlq.ParseWhen(f.Since, time.Now()); err != nil {
		return usageError{"--since: " + err.Error()}
	}
	if f.filter.Until, err = dlq.ParseWhen(f.Until, time.Now()); err != nil {
		return usageError{"--until: " + err.Error()}
	}
	if err := f.filter.Validate(); err != nil {
		return usageError{"--" + err.Error()}
	}
	return nil
}

func (f *dlqFlags) store(ctx context.Context) (*dlq.Store, func(), error) {
	cfg, err := loadConfig(f.Config, f.natsFlags)
	if err != nil {
		return nil, nil, err
	}
	toLocalServer(cfg)
	conn, err := app.Connect(ctx, cfg, zap.NewNop())
	if err != nil {
		return nil, nil, err
	}
	for _, s := range cfg.Sinks {
		f.sinks = append(f.sinks, s.Name)
	}
	f.cfg, f.js = cfg, conn.JS
	return dlq.NewStore(conn.JS, conn.Topo), conn.Close, nil
}

// noMatchHint is printed (to stderr) when the filter matched nothing and
// names a sink that is not configured: most often a typo, which would
// otherwise read as "that sink has no dead letters". It names the
// configured sinks and those with dead letters (a scan of the stream, made
// only on this path). Empty when the sink is configured or not filtered on.
func (f *dlqFlags) noMatchHint(ctx context.Context, st *dlq.Store) string {
	sink := f.filter.Sink
	if sink == "" || sink == dlq.NoSink || slices.Contains(f.sinks, sink) {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "no sink %q is configured", sink)
	switch {
	case f.Config == "":
		b.WriteString(" (no --config given, so none are known here)")
	case len(f.sinks) == 0:
		fmt.Fprintf(&b, " (%s configures none)", f.Config)
	default:
		fmt.Fprintf(&b, "; %s configures: %s", f.Config, strings.Join(f.sinks, ", "))
	}
	counts, _, err := st.Stats(ctx, dlq.Filter{}, func(r *dlq.Record) string { return r.Sink })
	switch {
	case err != nil:
		fmt.Fprintf(&b, "\n(the sinks with dead letters could not be read: %v)", err)
	case len(counts) == 0:
		b.WriteString("\nno sink has dead letters")
	default:
		names := make([]string, 0, len(counts))
		for n := range counts {
			names = append(names, fmt.Sprintf("%s (%d)", n, counts[n]))
		}
		sort.Strings(names)
		fmt.Fprintf(&b, "\nsinks with dead letters: %s", strings.Join(names, ", "))
	}
	return b.String()
}

// hintNoMatch prints noMatchHint, if any, to w.
func (f *dlqFlags) hintNoMatch(ctx context.Context, w io.Writer, st *dlq.Store) {
	if h := f.noMatchHint(ctx, st); h != "" {
		fmt.Fprintln(w, h)
	}
}

// withStore runs fn against the dead-letter store f connects to.
func (f *dlqFlags) withStore(ctx context.Context, fn func(*dlq.Store) error) error {
	st, done, err := f.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	return fn(st)
}

type cliDLQList struct {
	dlqFlags
	Limit int  `default:"100" help:"At most this many dead letters (0: all)."`
	JSON  bool `help:"One JSON object per line."`
}

func (c *cliDLQList) Run(ctx context.Context, s *streams) error {
	stdout, limit, asJSON := s.stdout, &c.Limit, &c.JSON
	return c.withStore(ctx, func(st *dlq.Store) error {
		// Streamed: a dead-letter stream of a million dead letters is
		// printed as it is read, never held in memory.
		n := 0
		var out recordWriter = newTableWriter(stdout)
		if *asJSON {
			out = jsonLines{json.NewEncoder(stdout)}
		}
		var werr error
		var last uint64
		more := false
		err := st.Each(ctx, c.filter, func(r *dlq.Record) bool {
			// One past the limit is read, not printed: it says whether
			// more match.
			if *limit > 0 && n == *limit {
				more = true
				return false
			}
			if werr = out.write(r); werr != nil {
				return false
			}
			n, last = n+1, r.Seq
			return true
		})
		if err := errors.Join(err, werr, out.flush()); err != nil {
			return err
		}
		if *asJSON {
			return nil
		}
		if n == 0 {
			fmt.Fprintln(stdout, "no dead letters")
			c.hintNoMatch(ctx, s.stderr, st)
		}
		if more {
			// On stderr: stdout stays the table alone, for a pipe.
			fmt.Fprintf(s.stderr, "showed the first %d; more match: the next page is --after %d, all of them --limit 0 (dlq stats counts them)\n", n, last)
		}
		return nil
	})
}

type cliDLQStats struct {
	dlqFlags
	JSON bool `help:"Print a JSON object: total and counts by sink, reason, status and code."`
}

func (c *cliDLQStats) Run(ctx context.Context, s *streams) error {
	return c.withStore(ctx, func(st *dlq.Store) error {
		t, err := tally(ctx, st, c.filter)
		if err != nil {
			return err
		}
		if c.JSON {
			return statsJSON(s.stdout, t)
		}
		printStats(s.stdout, t)
		if t.total == 0 {
			c.hintNoMatch(ctx, s.stderr, st)
		}
		return nil
	})
}

type cliDLQShow struct {
	dlqFlags
	Entry string `arg:"" name:"SEQ|EVENT_ID" help:"A SEQ or EVENT from dlq list."`
	JSON  bool   `help:"One JSON object per entry, with its original headers and envelope."`
}

func (c *cliDLQShow) Run(ctx context.Context, s *streams) error {
	stdout := s.stdout
	show := showRecord
	if c.JSON {
		enc := json.NewEncoder(stdout)
		show = func(_ io.Writer, r *dlq.Record) error { return enc.Encode(recordJSON(r)) }
	}
	return c.withStore(ctx, func(st *dlq.Store) error {
		if seq, err := strconv.ParseUint(c.Entry, 10, 64); err == nil {
			r, err := st.Get(ctx, seq)
			if err != nil {
				return err
			}
			return show(stdout, r)
		}
		// Not a sequence: an envelope id, with every entry it has.
		filter := c.filter
		filter.EventID = c.Entry
		n := 0
		var werr error
		err := st.Each(ctx, filter, func(r *dlq.Record) bool {
			if n > 0 && !c.JSON {
				fmt.Fprintln(stdout, "\n---")
			}
			n++
			werr = show(stdout, r)
			return werr == nil
		})
		if err := errors.Join(err, werr); err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("no dead letter for event %q (see dispatcher dlq list)", c.Entry)
		}
		return nil
	})
}

type cliDLQReplay struct {
	dlqFlags
	DryRun bool    `help:"Print the count and a sample; change nothing."`
	Rate   float64 `help:"Replays per second (0: as fast as JetStream confirms)." placeholder:"N"`
	Limit  int     `help:"Replay at most this many (0: all matching)."`
}

func (c *cliDLQReplay) Run(ctx context.Context, s *streams) error {
	stdout, stderr, dry := s.stdout, s.stderr, &c.DryRun
	return c.withStore(ctx, func(st *dlq.Store) error {
		opts := dlq.ReplayOptions{DryRun: *dry, Rate: c.Rate, Limit: c.Limit}
		if isTerminal(stderr) {
			opts.Progress = func(n int) { fmt.Fprintf(stderr, "\rreplayed %d", n) }
		}
		warn := func(err error) { fmt.Fprintln(stderr, "warning:", err) }
		res, err := opsevents.NewStore(st, c.js, c.cfg, "cli", warn).Replay(ctx, c.filter, opts)
		if opts.Progress != nil && res.Replayed > 0 {
			fmt.Fprintln(stderr)
		}
		if err != nil && res.Matched == 0 {
			return err // nothing was read (no stream, no JetStream): no count to print
		}
		if err == nil && res.Matched == 0 {
			c.hintNoMatch(ctx, stderr, st)
		}
		if *dry {
			fmt.Fprintf(stdout, "dry run: %d dead letters match; a sample:\n", res.Matched)
			printRecords(stdout, res.Sample)
			return err
		}
		fmt.Fprintf(stdout, "replayed %d of %d matching dead letters", res.Replayed, res.Matched)
		if res.Skipped > 0 {
			fmt.Fprintf(stdout, "; skipped %d that cannot be delivered as they are (invalid envelopes, unknown sinks: purge them)", res.Skipped)
		}
		fmt.Fprintln(stdout)
		return err
	})
}

type cliDLQPurge struct {
	dlqFlags
	Yes bool `help:"Do not ask for confirmation."`
}

func (c *cliDLQPurge) Run(ctx context.Context, s *streams) error {
	stdout := s.stdout
	return c.withStore(ctx, func(st *dlq.Store) error {
		filter, asked := c.filter, -1
		if !c.Yes {
			// The purge then acts on what was counted: none written
			// after the count (Through), so it never purges more than
			// it asked about. Fewer, if some were replayed or purged
			// meanwhile (said below).
			n, through, err := countThrough(ctx, st, filter)
			if err != nil {
				return err
			}
			if n == 0 {
				fmt.Fprintln(stdout, "no dead letters match; nothing purged")
				c.hintNoMatch(ctx, s.stderr, st)
				return nil
			}
			fmt.Fprintf(stdout, "purge %d dead letters for good? [y/N] ", n)
			answer, _ := bufio.NewReader(s.stdin).ReadString('\n')
			if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
				fmt.Fprintln(stdout, "nothing purged")
				return nil
			}
			filter.Through, asked = through, n
		}
		var progress func(int)
		if isTerminal(s.stderr) {
			progress = func(n int) {
				if n%100 == 0 {
					fmt.Fprintf(s.stderr, "\rpurged %d", n)
				}
			}
		}
		n, err := st.PurgeProgress(ctx, filter, progress)
		if progress != nil && n >= 100 {
			fmt.Fprintln(s.stderr)
		}
		if err != nil && n == 0 {
			return err // nothing purged; the error says why (no stream, no JetStream)
		}
		fmt.Fprintf(stdout, "purged %d dead letters", n)
		if asked > n && err == nil {
			fmt.Fprintf(stdout, "; the other %d were replayed or purged meanwhile (by another dlq command or the console)", asked-n)
		}
		fmt.Fprintln(stdout)
		if asked < 0 && n == 0 && err == nil {
			c.hintNoMatch(ctx, s.stderr, st)
		}
		return err
	})
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func printRecords(w io.Writer, recs []*dlq.Record) {
	if len(recs) == 0 {
		fmt.Fprintln(w, "no dead letters")
		return
	}
	tw := newTableWriter(w)
	for _, r := range recs {
		_ = tw.write(r)
	}
	_ = tw.flush()
}

// recordWriter prints dead letters as they are read.
type recordWriter interface {
	write(*dlq.Record) error
	flush() error
}

type jsonLines struct{ enc *json.Encoder }

func (j jsonLines) write(r *dlq.Record) error { return j.enc.Encode(r) }
func (jsonLines) flush() error                { return nil }

// tableWriter aligns columns a page (100 rows) at a time, so a long list
// starts printing at once and holds one page in memory.
type tableWriter struct {
	w    io.Writer
	tw   *tabwriter.Writer
	rows int
}

func newTableWriter(w io.Writer) *tableWriter { return &tableWriter{w: w} }

func (t *tableWriter) write(r *dlq.Record) error {
	if t.tw == nil {
		t.tw = tabwriter.NewWriter(t.w, 0, 0, 2, ' ', 0)
		if t.rows == 0 {
			fmt.Fprintln(t.tw, "SEQ\tSINK\tREASON\tSTATUS\tCODE\tATTEMPTS\tLAST ATTEMPT\tEVENT\tERROR")
		}
	}
	status := "-"
	if r.Status != 0 {
		status = strconv.Itoa(r.Status)
	}
	fmt.Fprintf(t.tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Seq, r.Sink, r.Reason, status, dash(r.Code),
		r.Attempts, r.LastAttempt.Local().Format(time.DateTime), dash(r.EventID), truncate(r.Error, 90))
	if t.rows++; t.rows%100 == 0 {
		return t.flush()
	}
	return nil
}

func (t *tableWriter) flush() error {
	if t.tw == nil {
		return nil
	}
	err := t.tw.Flush()
	t.tw = nil
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func truncate(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// statKeys are the groupings dlq stats counts by.
var statKeys = []struct {
	title, json string
	key         func(*dlq.Record) string
}{
	{"sink", "by_sink", func(r *dlq.Record) string { return r.Sink }},
	{"reason", "by_reason", func(r *dlq.Record) string { return string(r.Reason) }},
	{"status", "by_status", func(r *dlq.Record) string { return dash(strings.TrimPrefix(strconv.Itoa(r.Status), "0")) }},
	{"vendor code", "by_code", func(r *dlq.Record) string { return dash(r.Code) }},
}

// statsTally is dlq stats' counts: the total, and by each of statKeys.
type statsTally struct {
	total  int
	counts []map[string]int // statKeys' order
}

// tally counts the matching dead letters by every key in one scan.
func tally(ctx context.Context, st *dlq.Store, f dlq.Filter) (statsTally, error) {
	t := statsTally{counts: make([]map[string]int, len(statKeys))}
	for i := range t.counts {
		t.counts[i] = map[string]int{}
	}
	err := st.Each(ctx, f, func(r *dlq.Record) bool {
		t.total++
		for i, k := range statKeys {
			t.counts[i][k.key(r)]++
		}
		return true
	})
	return t, err
}

// countThrough counts the matching dead letters and returns the last one's
// sequence: a filter bounded there (Filter.Through) matches no more.
func countThrough(ctx context.Context, st *dlq.Store, f dlq.Filter) (n int, through uint64, err error) {
	err = st.Each(ctx, f, func(r *dlq.Record) bool {
		n, through = n+1, r.Seq
		return true
	})
	return n, through, err
}

func printStats(w io.Writer, t statsTally) {
	fmt.Fprintf(w, "%d dead letters\n", t.total)
	if t.total == 0 {
		return
	}
	for i, k := range statKeys {
		counts := t.counts[i]
		fmt.Fprintf(w, "\nby %s:\n", k.title)
		names := make([]string, 0, len(counts))
		for n := range counts {
			names = append(names, n)
		}
		sort.Slice(names, func(a, b int) bool {
			return counts[names[a]] > counts[names[b]] || counts[names[a]] == counts[names[b]] && names[a] < names[b]
		})
		for _, n := range names {
			fmt.Fprintf(w, "  %-32s %d\n", n, counts[n])
		}
	}
}

// statsJSON prints {"total": N, "by_sink": {...}, "by_reason": {...}, ...}.
func statsJSON(w io.Writer, t statsTally) error {
	out := map[string]any{"total": t.total}
	for i, k := range statKeys {
		out[k.json] = t.counts[i]
	}
	return writeJSON(w, out)
}

// showAttempts prints a dead letter's attempt log as a table, oldest
// first, numbered among all the event's attempts.
func showAttempts(w io.Writer, l dlq.AttemptLog) {
	if len(l.Attempts) == 0 {
		fmt.Fprintln(w, "\nattempts: not logged (a dead letter recorded before attempt logs were kept, or without a vendor request)")
		return
	}
	fmt.Fprintf(w, "\nattempts (%d in all", l.Total)
	if n := l.Dropped(); n > 0 {
		fmt.Fprintf(w, "; the first %d not kept", n)
	}
	fmt.Fprintln(w, "):")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  #\tRUN\tTIME\tSTATUS\tCODE\tTOOK\tERROR")
	for i, a := range l.Attempts {
		run := "first delivery"
		if a.Replay > 0 {
			run = fmt.Sprintf("replay %d", a.Replay)
		}
		status, code := "-", a.Code
		if a.Status != 0 {
			status = strconv.Itoa(a.Status)
		}
		if code == "" {
			code = "-"
		}
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%dms\t%s\n", l.Dropped()+i+1, run,
			a.At.UTC().Format(time.RFC3339Nano), status, code, a.LatencyMS, truncate(a.Error, 120))
	}
	_ = tw.Flush()
}

// recordJSON is a dead letter with its original message, for dlq show --json:
// the envelope as JSON when it is JSON, else as a string.
func recordJSON(r *dlq.Record) any {
	out := struct {
		*dlq.Record
		Header   map[string][]string `json:"header,omitempty"`
		Envelope json.RawMessage     `json:"envelope,omitempty"`
		Data     string              `json:"data,omitempty"`
	}{Record: r, Header: r.Header}
	if json.Valid(r.Data) {
		out.Envelope = r.Data
	} else {
		out.Data = string(r.Data)
	}
	return out
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func showRecord(w io.Writer, r *dlq.Record) error {
	// The attempt log is printed as a table below, not as JSON here: a
	// shallower field of the same JSON name hides the record's.
	b, err := json.MarshalIndent(struct {
		*dlq.Record
		Log struct{} `json:"attempt_log,omitzero"`
	}{Record: r}, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s\n", b)
	showAttempts(w, r.Log)
	fmt.Fprintln(w, "\noriginal headers:")
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(w, "  %s: %s\n", k, strings.Join(r.Header[k], ", "))
	}
	fmt.Fprintln(w, "\noriginal envelope:")
	var pretty bytes.Buffer
	if json.Indent(&pretty, r.Data, "  ", "  ") == nil {
		fmt.Fprintf(w, "  %s\n", pretty.String())
	} else {
		fmt.Fprintf(w, "  %q\n", truncate(string(r.Data), 2000))
	}
	return nil
}
