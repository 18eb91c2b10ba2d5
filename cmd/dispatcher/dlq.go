package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/app"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
)

const dlqUsage = `usage: dispatcher dlq COMMAND [flags]

  list     entries matching the filters (--limit, --json)
  stats    counts by sink, reason, status and vendor code
  show SEQ|ID  one entry (or every entry of an envelope id): why, history,
           and the original envelope
  replay   put matching entries back on their failed sink's queue
           (--dry-run prints the count and a sample; --rate N/s; --limit N)
  purge    delete matching entries (asks first; --yes skips the question)

Filters: --sink --status --code --reason --id --since --until
(--since/--until take RFC 3339 times or durations back from now, e.g. 24h)
Connection: --config FILE or --nats-url URL (default: a local "dispatcher run").
`

type dlqFlags struct {
	fs      *flag.FlagSet
	config  *string
	natsURL *string
	filter  dlq.Filter
	since   *string
	until   *string
	args    []string
}

func newDLQFlags(name string, stderr io.Writer) *dlqFlags {
	fs := newFlags("dlq "+name, stderr)
	f := &dlqFlags{fs: fs}
	f.config = fs.String("config", "", "config file (for nats and streams settings)")
	f.natsURL = fs.String("nats-url", "", "NATS URL (default: the embedded server of a local dispatcher run)")
	fs.StringVar(&f.filter.Sink, "sink", "", "only this sink (- for invalid envelopes)")
	fs.IntVar(&f.filter.Status, "status", 0, "only this HTTP status")
	fs.StringVar(&f.filter.Code, "code", "", "only this vendor error code, e.g. EVENT_TYPE_DOES_NOT_EXIST")
	fs.Func("reason", "only this reason, e.g. vendor_rejected, retries_exhausted", func(v string) error {
		f.filter.Reason = outcome.Reason(v)
		return nil
	})
	fs.StringVar(&f.filter.EventID, "id", "", "only this envelope id")
	f.since = fs.String("since", "", "only entries last attempted at or after this (RFC 3339 or a duration ago, e.g. 2h)")
	f.until = fs.String("until", "", "only entries last attempted at or before this")
	return f
}

// parse reads flags wherever they stand (dlq show 42 --nats-url … works),
// keeping the other arguments in f.args.
func (f *dlqFlags) parse(args []string) error {
	for {
		if err := f.fs.Parse(args); err != nil {
			return err
		}
		if f.fs.NArg() == 0 {
			break
		}
		f.args = append(f.args, f.fs.Arg(0))
		args = f.fs.Args()[1:]
	}
	switch show := f.fs.Name() == "dispatcher dlq show"; {
	case show && len(f.args) != 1:
		return usageError{"usage: dispatcher dlq show SEQ|EVENT_ID (a SEQ or EVENT from dlq list)"}
	case !show && len(f.args) > 0:
		return usageError{fmt.Sprintf("unexpected argument %q (filters are flags, e.g. --sink %s)", f.args[0], f.args[0])}
	}
	var err error
	if f.filter.Since, err = parseWhen(*f.since, time.Now()); err != nil {
		return usageError{"--since: " + err.Error()}
	}
	if f.filter.Until, err = parseWhen(*f.until, time.Now()); err != nil {
		return usageError{"--until: " + err.Error()}
	}
	return nil
}

func parseWhen(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration like 24h", s)
	}
	return now.Add(-d), nil
}

func (f *dlqFlags) store(ctx context.Context) (*dlq.Store, func(), error) {
	cfg, err := loadConfig(*f.config, *f.natsURL)
	if err != nil {
		return nil, nil, err
	}
	if cfg.NATS.URL == "" {
		cfg.NATS.URL = "nats://" + cfg.NATS.Embedded.Listen
	}
	conn, err := app.Connect(ctx, cfg, zap.NewNop())
	if err != nil {
		return nil, nil, err
	}
	return dlq.NewStore(conn.JS, conn.Topo), conn.Close, nil
}

// dlqRun is one dlq subcommand, bound to its flags.
type dlqRun func(ctx context.Context, st *dlq.Store, f *dlqFlags) error

// dlqCommands registers each subcommand's own flags and returns its body;
// the filters, the connection and the positional arguments are common.
func dlqCommands(stdout, stderr io.Writer) map[string]func(fs *flag.FlagSet) dlqRun {
	return map[string]func(fs *flag.FlagSet) dlqRun{
		"list": func(fs *flag.FlagSet) dlqRun {
			limit := fs.Int("limit", 100, "at most this many entries (0: all)")
			asJSON := fs.Bool("json", false, "one JSON object per line")
			return func(ctx context.Context, st *dlq.Store, f *dlqFlags) error {
				// Streamed: a dead-letter stream of a million entries is
				// printed as it is read, never held in memory.
				n := 0
				var out recordWriter = newTableWriter(stdout)
				if *asJSON {
					out = jsonLines{json.NewEncoder(stdout)}
				}
				var werr error
				err := st.Each(ctx, f.filter, func(r *dlq.Record) bool {
					if werr = out.write(r); werr != nil {
						return false
					}
					n++
					return *limit == 0 || n < *limit
				})
				if err := errors.Join(err, werr, out.flush()); err != nil {
					return err
				}
				if n == 0 && !*asJSON {
					fmt.Fprintln(stdout, "no dead letters")
				}
				return nil
			}
		},
		"stats": func(*flag.FlagSet) dlqRun {
			return func(ctx context.Context, st *dlq.Store, f *dlqFlags) error {
				return printStats(ctx, stdout, st, f.filter)
			}
		},
		"show": func(*flag.FlagSet) dlqRun {
			return func(ctx context.Context, st *dlq.Store, f *dlqFlags) error {
				if seq, err := strconv.ParseUint(f.args[0], 10, 64); err == nil {
					r, err := st.Get(ctx, seq)
					if err != nil {
						return err
					}
					return showRecord(stdout, r)
				}
				// Not a sequence: an envelope id, with every entry it has.
				filter := f.filter
				filter.EventID = f.args[0]
				n := 0
				var werr error
				err := st.Each(ctx, filter, func(r *dlq.Record) bool {
					if n > 0 {
						fmt.Fprintln(stdout, "\n---")
					}
					n++
					werr = showRecord(stdout, r)
					return werr == nil
				})
				if err := errors.Join(err, werr); err != nil {
					return err
				}
				if n == 0 {
					return fmt.Errorf("no dead letter for event %q (see dispatcher dlq list)", f.args[0])
				}
				return nil
			}
		},
		"replay": func(fs *flag.FlagSet) dlqRun {
			dry := fs.Bool("dry-run", false, "print the count and a sample; change nothing")
			rate := fs.Float64("rate", 0, "replays per second (0: as fast as JetStream confirms)")
			limit := fs.Int("limit", 0, "replay at most this many (0: all matching)")
			return func(ctx context.Context, st *dlq.Store, f *dlqFlags) error {
				opts := dlq.ReplayOptions{DryRun: *dry, Rate: *rate, Limit: *limit}
				if isTerminal(stderr) {
					opts.Progress = func(n int) { fmt.Fprintf(stderr, "\rreplayed %d", n) }
				}
				res, err := st.Replay(ctx, f.filter, opts)
				if opts.Progress != nil && res.Replayed > 0 {
					fmt.Fprintln(stderr)
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
			}
		},
		"purge": func(fs *flag.FlagSet) dlqRun {
			yes := fs.Bool("yes", false, "do not ask for confirmation")
			return func(ctx context.Context, st *dlq.Store, f *dlqFlags) error {
				if !*yes {
					_, total, err := st.Stats(ctx, f.filter, func(*dlq.Record) string { return "" })
					if err != nil {
						return err
					}
					fmt.Fprintf(stdout, "purge %d dead letters for good? [y/N] ", total)
					answer, _ := bufio.NewReader(os.Stdin).ReadString('\n')
					if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
						fmt.Fprintln(stdout, "nothing purged")
						return nil
					}
				}
				n, err := st.Purge(ctx, f.filter)
				fmt.Fprintf(stdout, "purged %d dead letters\n", n)
				return err
			}
		},
	}
}

func dlqCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, dlqUsage)
		return usageError{"dlq: no command given"}
	}
	cmd, ok := dlqCommands(stdout, stderr)[args[0]]
	if !ok {
		fmt.Fprint(stderr, dlqUsage)
		return usageError{fmt.Sprintf("dlq: unknown command %q", args[0])}
	}
	f := newDLQFlags(args[0], stderr)
	run := cmd(f.fs)
	if err := f.parse(args[1:]); err != nil {
		return err
	}
	st, done, err := f.store(ctx)
	if err != nil {
		return err
	}
	defer done()
	return run(ctx, st, f)
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

func printStats(ctx context.Context, w io.Writer, st *dlq.Store, f dlq.Filter) error {
	keys := []struct {
		title string
		key   func(*dlq.Record) string
	}{
		{"sink", func(r *dlq.Record) string { return r.Sink }},
		{"reason", func(r *dlq.Record) string { return string(r.Reason) }},
		{"status", func(r *dlq.Record) string { return dash(strings.TrimPrefix(strconv.Itoa(r.Status), "0")) }},
		{"vendor code", func(r *dlq.Record) string { return dash(r.Code) }},
	}
	for i, k := range keys {
		counts, total, err := st.Stats(ctx, f, k.key)
		if err != nil {
			return err
		}
		if i == 0 {
			fmt.Fprintf(w, "%d dead letters\n", total)
			if total == 0 {
				return nil
			}
		}
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
	return nil
}

func showRecord(w io.Writer, r *dlq.Record) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "%s\n\noriginal headers:\n", b)
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
