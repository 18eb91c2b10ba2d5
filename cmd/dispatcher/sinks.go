package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/app"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/topology"
)

type cliSinks struct {
	Remove    cliSinksRemove    `cmd:"" help:"Delete a sink's consumers and waiting retries; a dry run unless --yes (which waits about 7 s between marking and deleting). Its dead letters are kept."`
	Pause     cliSinksPause     `cmd:"" help:"Pause a sink in every dispatcher until resumed: its events and retries wait, nothing is delivered or dead-lettered."`
	Resume    cliSinksResume    `cmd:"" help:"Resume a paused sink: what waited is delivered, in order."`
	Redeliver cliSinksRedeliver `cmd:"" help:"Re-send the events of a time window to one sink (delivered or not), paced by its rate_limit; --dry-run counts them first."`
}

// cliSinksRemove is the removal of a sink from a deployment: its consumers
// and retries would otherwise stay on the server for ever (and with
// interest retention keep every event in the events stream).
type cliSinksRemove struct {
	Name   string `arg:"" help:"The sink to remove." placeholder:"NAME"`
	Config string `help:"Config file (for its nats and streams settings). The sink must no longer be in it: remove it from every replica's config first." placeholder:"FILE"`
	Yes    bool   `help:"Remove it. Without --yes, print what would be dropped and change nothing."`
	Force  bool   `help:"With --yes, remove a lead even where what it had not checked may then be checked by no one (docs/operations.md, \"Removing the lead\"). Off by default."`
	JSON   bool   `help:"Print a JSON object: what was (or would be) dropped."`
	natsFlags
}

// leadCheckTimeout bounds the reads that decide whether a lead can go.
const leadCheckTimeout = 30 * time.Second

// removal is what sinks remove reports.
type removal struct {
	topology.SinkFootprint
	// DeadLetters are the sink's dead letters, kept.
	DeadLetters int  `json:"dead_letters_kept"`
	Removed     bool `json:"removed"`
	// RunBy are the dispatchers whose presence records name the sink
	// (a dry run's; --yes refuses while there are any).
	RunBy []topology.Replica `json:"run_by,omitempty"`
	// LeadRefusal, in a dry run, is why --yes would refuse to remove the
	// sink, a lead (topology.LeadRemoval).
	LeadRefusal string `json:"lead_refusal,omitempty"`
}

func (c *cliSinksRemove) Run(ctx context.Context, s *streams) error {
	cfg, err := loadConfig(c.Config, c.natsFlags)
	if err != nil {
		return err
	}
	// A dispatcher running a config with the sink creates its consumers
	// again at its next start, from new events only: what was published
	// in between would be lost to the sink. So the sink must be out of
	// the config first (and, below, no dispatcher may still consume it).
	for i, sc := range cfg.Sinks {
		if sc.Name == c.Name {
			return fmt.Errorf("sink %s is still in %s (sinks[%d]): a dispatcher running that config would create it again, "+
				"from new events only; remove it from every replica's config, roll that out, then run this again", c.Name, c.Config, i)
		}
	}
	toLocalServer(cfg)
	conn, err := app.Connect(ctx, cfg, zap.NewNop())
	if err != nil {
		return err
	}
	defer conn.Close()
	var r removal
	if r.SinkFootprint, err = conn.Topo.Footprint(ctx, conn.JS, c.Name); err != nil {
		return err
	}
	if _, r.DeadLetters, err = dlq.NewStore(conn.JS, conn.Topo).Stats(ctx, dlq.Filter{Sink: c.Name}, func(*dlq.Record) string { return "" }); err != nil {
		return err
	}
	// Who runs it: a replica's presence record says so even while its
	// gate is shut and it pulls nothing; waiting pulls show a replica of a
	// version without presence records.
	var inUse *topology.InUseError
	if err := conn.Topo.CheckUnused(ctx, conn.JS, c.Name); errors.As(err, &inUse) {
		r.RunBy = inUse.Replicas
		if c.Yes {
			return err
		}
	} else if err != nil {
		return err
	}
	if r.Lead {
		// The lead checks what no other sink reads. What it had not
		// checked is checked by the next sink made the lead, from its
		// floor: once it is gone, that floor is gone too
		// (topology.LeadRemoval). A dry run says whether --yes would
		// refuse.
		lctx, cancel := context.WithTimeout(ctx, leadCheckTimeout)
		lr, err := conn.Topo.ReadLeadRemoval(lctx, conn.JS, c.Name)
		cancel()
		if err != nil {
			return err
		}
		if err := lr.Check(); err != nil {
			switch {
			case !c.Yes:
				r.LeadRefusal = err.Error()
			case !c.Force:
				return err
			default:
				fmt.Fprintf(s.stderr, "--force: removing sink %s anyway; what it had not checked may be checked by no one: %v\n", c.Name, err)
			}
		}
	}
	if c.Yes && r.Exists() {
		// Two phases (topology.Retire): the consumers are marked, and
		// deleted only once no dispatcher can still believe in them, so
		// an event naming the sink is its backlog or dead-lettered
		// unknown_destination, never neither.
		if !c.JSON { // --json prints one object, whatever reads it
			fmt.Fprintf(s.stderr, "removing sink %s: its consumers are marked; deleting them in %s, once no dispatcher still believes in them\n",
				c.Name, topology.RemovalSettle)
		}
		if r.SinkFootprint, err = conn.Topo.Retire(ctx, conn.JS, c.Name, topology.RemovalSettle); err != nil {
			return err
		}
		r.Removed = true
	}
	if c.JSON {
		return writeJSON(s.stdout, r)
	}
	return printRemoval(s, c.Name, r, inUse, c.Yes)
}

func printRemoval(s *streams, name string, r removal, inUse *topology.InUseError, yes bool) error {
	w := s.stdout
	if !r.Exists() {
		fmt.Fprintf(w, "sink %s has no consumers and no retries: nothing to remove", name)
		if r.DeadLetters > 0 {
			fmt.Fprintf(w, " (%d dead letters of it are kept: dispatcher dlq list --sink %s)", r.DeadLetters, name)
		}
		_, err := fmt.Fprintln(w)
		return err
	}
	verb := "would drop"
	if r.Removed {
		verb = "dropped"
	}
	fmt.Fprintf(w, "sink %s:\n", name)
	if r.Lead {
		fmt.Fprintf(w, "  is a lead: its consumer reads every subject; a dispatcher whose config lacks it makes another sink the lead\n")
	}
	for _, cf := range r.Consumers {
		fmt.Fprintf(w, "  consumer %s on %s: %s it, with %d messages it had not read and %d in flight\n",
			cf.Name, cf.Stream, map[bool]string{true: "deleted", false: "would delete"}[r.Removed], cf.Pending, cf.AckPending)
	}
	fmt.Fprintf(w, "  %s %d retries and replays waiting for it\n", verb, r.Retries)
	if r.Floors > 0 {
		fmt.Fprintf(w, "  %s the %d ack floors recorded for it (added again later, it starts as a new sink)\n", verb, r.Floors)
	}
	fmt.Fprintf(w, "  keeps its %d dead letters (dispatcher dlq list --sink %s; dlq purge --sink %s drops them)\n", r.DeadLetters, name, name)
	if inUse != nil {
		fmt.Fprintf(w, "%s\n", inUse)
	}
	if r.LeadRefusal != "" {
		fmt.Fprintf(w, "--yes would refuse: %s\n", r.LeadRefusal)
	}
	if !yes {
		fmt.Fprintf(w, "dry run: nothing changed; dispatcher sinks remove %s --yes removes it\n", name)
	}
	return nil
}
