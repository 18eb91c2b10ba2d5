package redeliver

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/topology"
)

// Runner runs redeliveries against one deployment and config, each paced
// by its sink's rate_limit: what the console starts (the CLI builds its
// Options itself, for --rate and --limit).
type Runner struct {
	JS     jetstream.JetStream
	Topo   topology.Topology
	Config *config.Config
	// Ended, if set, is told of every redelivery that ran (not a dry
	// run): the dispatcher publishes chapar.ops.redelivery_done with it.
	Ended func(ctx context.Context, sink string, res Result, err error)
}

// Redeliver runs (or, dryRun, counts) a redelivery of the window to sink.
func (r Runner) Redeliver(ctx context.Context, sink string, f Filter, dryRun bool, progress func(Result)) (Result, error) {
	var names []string
	for _, sc := range r.Config.Sinks {
		if sc.Name == sink {
			res, err := Run(ctx, r.JS, r.Topo, Options{Sink: sink, Routes: r.Config.Routes, Filter: f, DryRun: dryRun,
				Pace: Limiter(sc.RateLimit), Progress: progress})
			if !dryRun && r.Ended != nil {
				r.Ended(ctx, sink, res, err)
			}
			return res, err
		}
		names = append(names, sc.Name)
	}
	return Result{}, fmt.Errorf("no sink %q in this dispatcher's config (it configures: %s)", sink, strings.Join(names, ", "))
}
