package main

import (
	"context"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/app"
	"github.com/chapar-dev/chapar/internal/lookup"
)

type cliEvents struct {
	Show cliEventsShow `cmd:"" help:"Where is my event? For each sink: delivered (when, attempts, latency), retrying, dead-lettered, waiting in its backlog, paused, or why it does not get it."`
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
			detail = fmt.Sprintf("%d events ahead of it; %s", sk.Ahead, sk.Why)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", sk.Sink, sk.State, when, attempts, last, detail)
	}
	_ = tw.Flush()
}
