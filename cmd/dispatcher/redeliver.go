package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/app"
	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/opsevents"
	"github.com/chapar-dev/chapar/internal/redeliver"
)

// cliSinksRedeliver re-sends a window of events, delivered or not, to one
// sink (internal/redeliver): through the sink's retry queue, so no other
// sink sees them, paced by the sink's rate_limit.
type cliSinksRedeliver struct {
	Sink    string  `help:"The one sink to re-send to (it must be in --config)." required:"" placeholder:"NAME"`
	Config  string  `help:"Config file: the sink's routes and rate_limit, and the nats and streams settings." required:"" placeholder:"FILE"`
	Since   string  `help:"The window's start: the first event stored at or after it (RFC 3339, or a duration ago like 2h)." required:"" placeholder:"WHEN"`
	Until   string  `help:"The window's end (default: now)." placeholder:"WHEN"`
	Type    string  `help:"Only this event type, e.g. chapar.track." group:"filters"`
	Name    string  `help:"Only this event name, or a pattern as routes take (order_*)." group:"filters"`
	Subject string  `help:"Only events with this CloudEvents subject (most often the user)." group:"filters"`
	All     bool    `help:"Every event of the window that passes the filters, not only those the sink's routes (or an envelope's destinations) send it." group:"filters"`
	DryRun  bool    `help:"Print the count and a sample; send nothing."`
	Rate    float64 `help:"Re-sends per second (default: the sink's rate_limit; none: as fast as JetStream confirms)." placeholder:"N"`
	Limit   int     `help:"Re-send at most this many (0: the whole window)."`
	JSON    bool    `help:"Print a JSON object: the counts, a sample, and where a stopped job stopped."`
	natsFlags
}

func (c *cliSinksRedeliver) Run(ctx context.Context, s *streams) error {
	now := time.Now()
	f := redeliver.Filter{Type: c.Type, Name: c.Name, Subject: c.Subject, All: c.All}
	var err error
	if f.Since, err = dlq.ParseWhen(c.Since, now); err != nil {
		return usageError{"--since: " + err.Error()}
	}
	if f.Until, err = dlq.ParseWhen(c.Until, now); err != nil {
		return usageError{"--until: " + err.Error()}
	}
	if err := f.Validate(); err != nil {
		return usageError{"--" + err.Error()}
	}
	if f.Until.IsZero() {
		f.Until = now // the dry run's window is the job's
	}
	cfg, err := loadConfig(c.Config, c.natsFlags)
	if err != nil {
		return err
	}
	sink, err := configuredSink(cfg, c.Config, c.Sink)
	if err != nil {
		return err
	}
	toLocalServer(cfg)
	conn, err := app.Connect(ctx, cfg, zap.NewNop())
	if err != nil {
		return err
	}
	defer conn.Close()
	o := redeliver.Options{Sink: c.Sink, Routes: cfg.Routes, Filter: f, DryRun: c.DryRun, Limit: c.Limit,
		Pace: redeliver.Limiter(sink.RateLimit)}
	if c.Rate > 0 {
		o.Pace = redeliver.Limiter(&config.RateLimit{PerSecond: c.Rate, Burst: 1})
	}
	if !c.DryRun && !c.JSON {
		o.Progress = progressLine(s.stderr, isTerminal(s.stderr))
		fmt.Fprintf(s.stderr, "redelivering to %s the events stored from %s to %s, %s\n", c.Sink,
			f.Since.UTC().Format(time.RFC3339), f.Until.UTC().Format(time.RFC3339), paceText(c.Rate, sink.RateLimit))
	}
	res, err := redeliver.Run(ctx, conn.JS, conn.Topo, o)
	if !c.DryRun {
		if perr := opsevents.PublishRedeliveryDone(context.WithoutCancel(ctx), conn.JS, cfg, c.Sink, "cli", res, err); perr != nil {
			fmt.Fprintf(s.stderr, "note: chapar.ops.redelivery_done not published: %v\n", perr)
		}
	}
	if o.Progress != nil && res.Sent > 0 && isTerminal(s.stderr) {
		fmt.Fprintln(s.stderr)
	}
	if c.JSON {
		return errors.Join(writeJSON(s.stdout, res), err)
	}
	if err == nil || res.Scanned > 0 || res.Sent > 0 {
		printRedelivery(s.stdout, c, res) // else nothing was read (no stream, no JetStream): no count to print
	}
	if res.Resume.IsZero() || c.DryRun && err == nil {
		return err
	}
	// Stopped before the window's end: how to go on, on stderr.
	how := "stopped"
	if err == nil {
		how = fmt.Sprintf("stopped at --limit %d", c.Limit)
	}
	fmt.Fprintf(s.stderr, "%s after re-sending %d; to go on: dispatcher sinks redeliver %s --since %s\n",
		how, res.Sent, resumeArgs(c, res.Until), res.Resume.UTC().Format(time.RFC3339Nano))
	return err
}

// configuredSink is the sink named in cfg, or an error naming those it has.
func configuredSink(cfg *config.Config, file, name string) (config.Sink, error) {
	var names []string
	for _, sc := range cfg.Sinks {
		if sc.Name == name {
			return sc, nil
		}
		names = append(names, sc.Name)
	}
	return config.Sink{}, fmt.Errorf("no sink %q in %s (it configures: %s): a redelivery follows the sink's routes and rate_limit there",
		name, file, strings.Join(names, ", "))
}

func paceText(rate float64, rl *config.RateLimit) string {
	switch {
	case rate > 0:
		return fmt.Sprintf("at most %g a second (--rate)", rate)
	case rl != nil && rl.PerSecond > 0:
		return fmt.Sprintf("at most %g a second (its rate_limit)", rl.PerSecond)
	}
	return "unpaced (it has no rate_limit)"
}

// progressLine reports a job's progress on stderr: rewritten in place on
// a terminal, a line every 1,000 otherwise (a log).
func progressLine(w io.Writer, terminal bool) func(redeliver.Result) {
	return func(r redeliver.Result) {
		switch {
		case terminal:
			fmt.Fprintf(w, "\rre-sent %d (%d events read), at %s", r.Sent, r.Scanned, r.Reached.UTC().Format(time.RFC3339))
		case r.Sent%1000 == 0:
			fmt.Fprintf(w, "re-sent %d (%d events read)\n", r.Sent, r.Scanned)
		}
	}
}

// resumeArgs are the command's flags again (--rate and the NATS flags
// too: run without --nats-url, the job would go on against the config's
// server, or the embedded one), but --since and --limit, and with the
// window's end as used: a job resumed later re-sends the window it began,
// not one grown since (and not from a duration ago again). Values are
// quoted for a shell; a password in a server URL is not printed.
func resumeArgs(c *cliSinksRedeliver, until time.Time) string {
	var args []string
	add := func(flag, v string) {
		if v != "" {
			args = append(args, flag+" "+shellQuote(v))
		}
	}
	add("--sink", c.Sink)
	add("--config", c.Config)
	add("--until", until.UTC().Format(time.RFC3339Nano))
	add("--type", c.Type)
	add("--name", c.Name)
	add("--subject", c.Subject)
	if c.All {
		args = append(args, "--all")
	}
	if c.Rate > 0 {
		add("--rate", fmt.Sprintf("%g", c.Rate)) // the pace the job was given
	}
	add("--context", c.Context)
	add("--nats-url", redactedServers(c.Server))
	add("--creds", c.Creds)
	add("--nkey", c.NKey)
	add("--tlscert", c.TLSCert)
	add("--tlskey", c.TLSKey)
	add("--tlsca", c.TLSCA)
	return strings.Join(args, " ")
}

// redactedServers is a comma-separated list of server URLs with any
// password replaced (url.URL.Redacted): printed for the operator to run
// again, it must not put a secret in a terminal's scroll-back or a log.
func redactedServers(list string) string {
	if list == "" {
		return ""
	}
	parts := strings.Split(list, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			parts[i] = u.Redacted()
		}
	}
	return strings.Join(parts, ",")
}

func printRedelivery(w io.Writer, c *cliSinksRedeliver, r redeliver.Result) {
	if c.DryRun {
		fmt.Fprintf(w, "dry run: %d of the %d events stored from %s to %s would be re-sent to %s",
			r.Matched, r.Scanned, r.Since.UTC().Format(time.RFC3339), r.Until.UTC().Format(time.RFC3339), c.Sink)
	} else if !r.Resume.IsZero() {
		// Stopped: what was read is not the window.
		fmt.Fprintf(w, "re-sent %d to %s, then stopped, %d events into the window from %s to %s (job %s)",
			r.Sent, c.Sink, r.Scanned, r.Since.UTC().Format(time.RFC3339), r.Until.UTC().Format(time.RFC3339), r.Job)
	} else {
		fmt.Fprintf(w, "re-sent %d of the %d events stored from %s to %s to %s (job %s)",
			r.Sent, r.Scanned, r.Since.UTC().Format(time.RFC3339), r.Until.UTC().Format(time.RFC3339), c.Sink, r.Job)
	}
	var left []string
	if r.NotRouted > 0 {
		left = append(left, fmt.Sprintf("%d its routes do not send it (--all sends them)", r.NotRouted))
	}
	if r.Filtered > 0 {
		left = append(left, fmt.Sprintf("%d filtered out", r.Filtered))
	}
	if r.Invalid > 0 {
		left = append(left, fmt.Sprintf("%d invalid envelopes", r.Invalid))
	}
	if len(left) > 0 {
		fmt.Fprintf(w, "; left out: %s", strings.Join(left, ", "))
	}
	fmt.Fprintln(w)
	if !c.DryRun || len(r.Sample) == 0 {
		return
	}
	fmt.Fprintln(w, "a sample:")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "STORED\tPARTITION\tSEQ\tTYPE\tNAME\tSUBJECT\tEVENT")
	for _, e := range r.Sample {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\t%s\t%s\n", e.Stored.UTC().Format(time.RFC3339Nano), e.Partition, e.Seq,
			e.Type, e.Name, dash(e.Subject), e.ID)
	}
	_ = tw.Flush()
}
