package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/app"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/lookup"
)

type cliEvents struct {
	Show cliEventsShow `cmd:"" help:"Where is my event? For each sink: delivered (when, attempts, latency), retrying, dead-lettered, waiting in its backlog, paused, or why it does not get it."`
	List cliEventsList `cmd:"" help:"Deliveries of a time window, with their latest state, filtered by sink, type, name, subject (the user) and state; printed as they are read."`
}

type cliEventsList struct {
	Since   string `default:"1h" help:"From this time (RFC 3339, or a duration ago like 2h)." placeholder:"WHEN"`
	Until   string `help:"Up to this time." placeholder:"WHEN"`
	After   uint64 `help:"Only deliveries after this SEQ (the last one a previous list printed: the next page)." placeholder:"SEQ"`
	Sink    string `help:"Only this sink's deliveries."`
	Type    string `help:"Only events of this type (e.g. chapar.track)."`
	Name    string `help:"Only events of this name (e.g. order_paid)."`
	Subject string `help:"Only events of this subject (conventionally the user's id)."`
	State   string `help:"Only deliveries in this state now: delivered, retrying or dead_lettered." enum:",delivered,retrying,dead_lettered" default:""`
	Limit   int    `default:"100" help:"At most this many deliveries (0: all)."`
	Config  string `help:"Config file (its nats and streams settings)." placeholder:"FILE"`
	JSON    bool   `help:"One JSON object per delivery."`
	natsFlags
}

func (c *cliEventsList) Run(ctx context.Context, s *streams) error {
	f := lookup.Filter{After: c.After, Sink: c.Sink, Type: c.Type, Name: c.Name, Subject: c.Subject, State: lookup.State(c.State)}
	var err error
	if f.Since, err = dlq.ParseWhen(c.Since, time.Now()); err != nil {
		return usageError{"--since: " + err.Error()}
	}
	if f.Until, err = dlq.ParseWhen(c.Until, time.Now()); err != nil {
		return usageError{"--until: " + err.Error()}
	}
	cfg, err := loadConfig(c.Config, c.natsFlags)
	if err != nil {
		return err
	}
	toLocalServer(cfg)
	conn, err := app.Connect(ctx, cfg, zap.NewNop())
	if err != nil {
		return err
	}
	defer conn.Close()
	tw := tabwriter.NewWriter(s.stdout, 0, 0, 2, ' ', 0)
	enc := json.NewEncoder(s.stdout)
	n, last, more := 0, uint64(0), false
	if !c.JSON {
		fmt.Fprintln(tw, "SEQ\tWHEN\tEVENT\tTYPE\tNAME\tSUBJECT\tSINK\tSTATE\tATTEMPTS\tLAST")
	}
	err = lookup.List(ctx, conn.JS, cfg, f, func(e lookup.Entry) bool {
		if c.Limit > 0 && n == c.Limit {
			more = true
			return false
		}
		n, last = n+1, e.Seq
		if c.JSON {
			return enc.Encode(e) == nil
		}
		lastStatus := "-"
		if e.Status != 0 || e.Code != "" {
			lastStatus = strings.TrimSpace(fmt.Sprintf("%d %s", e.Status, e.Code))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", e.Seq, e.At.UTC().Format(time.RFC3339), e.EventID, e.Type,
			orDash(e.Name), orDash(e.Subject), e.Sink, e.State, e.Attempts, lastStatus)
		return true
	})
	_ = tw.Flush()
	if err != nil {
		return err
	}
	switch {
	case more:
		fmt.Fprintf(s.stderr, "%d shown; more match: the next page is --after %d\n", n, last)
	case n == 0:
		fmt.Fprintf(s.stderr, "no delivery matches (records are kept streams.deliveries_max_age, %s)\n", cfg.Streams.DeliveriesMaxAge)
	default:
		fmt.Fprintf(s.stderr, "%d shown; that is all\n", n)
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

type cliEventsShow struct {
	ID     string `arg:"" help:"The event's id (its CloudEvents id)." placeholder:"ID"`
	Config string `help:"Config file (its nats and streams settings, its sinks and routes)." placeholder:"FILE"`
	JSON   bool   `help:"Print a JSON object."`
	natsFlags
}

// eventsTimeout bounds the whole command.
const eventsTimeout = 30 * time.Second

func (c *cliEventsShow) Run(ctx context.Context, s *streams) error {
	cfg, err := loadConfig(c.Config, c.natsFlags)
	if err != nil {
		return err
	}
	toLocalServer(cfg)
	ctx, cancel := context.WithTimeout(ctx, eventsTimeout)
	defer cancel()
	conn, err := app.Connect(ctx, cfg, zap.NewNop())
	if err != nil {
		return err
	}
	defer conn.Close()
	rep, err := lookup.Show(ctx, conn.JS, cfg, c.ID)
	if err != nil {
		return err
	}
	if c.JSON {
		return writeJSON(s.stdout, rep)
	}
	printEvent(s, rep)
	if !rep.Found() {
		return fmt.Errorf("event %q: nothing recorded of it within streams.deliveries_max_age (%s), and it is not waiting in a backlog", c.ID, rep.RecordsKept)
	}
	return nil
}

func printEvent(s *streams, r lookup.Report) {
	w := s.stdout
	fmt.Fprintf(w, "event %s", r.EventID)
	if r.Type != "" {
		fmt.Fprintf(w, "  type %s", r.Type)
	}
	if r.Name != "" {
		fmt.Fprintf(w, "  name %s", r.Name)
	}
	if r.Subject != "" {
		fmt.Fprintf(w, "  subject %s", r.Subject)
	}
	fmt.Fprintln(w)
	switch {
	case r.Gone:
		fmt.Fprintf(w, "stored in %s #%d, since removed (older than streams.max_age)\n", r.Stream, r.Seq)
	case r.Seq > 0 && !r.Stored.IsZero():
		fmt.Fprintf(w, "stored in %s #%d at %s\n", r.Stream, r.Seq, r.Stored.UTC().Format(time.RFC3339Nano))
	case r.Seq > 0:
		fmt.Fprintf(w, "stored in %s #%d\n", r.Stream, r.Seq)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SINK\tSTATE\tWHEN\tATTEMPTS\tLAST\tDETAIL")
	for _, sk := range r.Sinks {
		when, attempts, last, detail := "-", "-", "-", sk.Why
		if rec := sk.Record; rec != nil {
			when, attempts = rec.At.UTC().Format(time.RFC3339), fmt.Sprint(rec.Attempts)
			if rec.Status != 0 || rec.Code != "" {
				last = strings.TrimSpace(fmt.Sprintf("%d %s", rec.Status, rec.Code))
			}
			switch sk.State {
			case lookup.Delivered:
				detail = fmt.Sprintf("latency %s", rec.Latency.Round(time.Microsecond*100))
				if rec.Replays > 0 {
					detail += fmt.Sprintf(", replay %d", rec.Replays)
				}
			case lookup.Retrying:
				detail = "next attempt " + rec.NextAttempt.UTC().Format(time.RFC3339)
			case lookup.DeadLettered:
				detail = fmt.Sprintf("%s: dispatcher dlq show %d", rec.Reason, rec.DeadLetter)
			}
			if sk.Why != "" {
				detail += " (" + sk.Why + ")"
			}
		}
		if sk.State == lookup.Waiting || sk.State == lookup.Paused {
			detail = fmt.Sprintf("up to %d events ahead of it; %s", sk.Ahead, sk.Why)
			if sk.Ahead == 0 {
				detail = "next in line; " + sk.Why
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", sk.Sink, sk.State, when, attempts, last, detail)
	}
	_ = tw.Flush()
}
