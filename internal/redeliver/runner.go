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
}

// Redeliver runs (or, dryRun, counts) a redelivery of the window to sink.
func (r Runner) Redeliver(ctx context.Context, sink string, f Filter, dryRun bool, progress func(Result)) (Result, error) {
	var names []string
	for _, sc := range r.Config.Sinks {
		if sc.Name == sink {
			return Run(ctx, r.JS, r.Topo, Options{Sink: sink, Routes: r.Config.Routes, Filter: f, DryRun: dryRun,
				Pace: Limiter(sc.RateLimit), Progress: progress})
		}
		names = append(names, sc.Name)
	}
	return Result{}, fmt.Errorf("no sink %q in this dispatcher's config (it configures: %s)", sink, strings.Join(names, ", "))
}
