package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/app"
	"github.com/chapar-dev/chapar/internal/topology"
)

// cliSinksPause and cliSinksResume record an operator's pause of a sink
// for the whole deployment (internal/dispatch, operator.go): every
// dispatcher running the sink stops pulling it within seconds, and one
// started later starts it paused, until it is resumed.
type cliSinksPause struct {
	pauseFlags
}

type cliSinksResume struct {
	pauseFlags
}

type pauseFlags struct {
	Name   string `arg:"" help:"The sink." placeholder:"NAME"`
	Config string `help:"Config file (for its nats and streams settings, and to name its sinks if NAME is not one of them)." placeholder:"FILE"`
	JSON   bool   `help:"Print a JSON object: the sink, its state and who runs it."`
	natsFlags
}

func (c *cliSinksPause) Run(ctx context.Context, s *streams) error {
	return setPause(ctx, s, c.pauseFlags, true)
}

func (c *cliSinksResume) Run(ctx context.Context, s *streams) error {
	return setPause(ctx, s, c.pauseFlags, false)
}

// pauseResult is what sinks pause and resume report.
type pauseResult struct {
	Sink   string `json:"sink"`
	Paused bool   `json:"paused"`
	// Was is the state recorded before (false: never paused).
	Was bool `json:"was_paused"`
	// RunBy are the dispatchers whose presence records name the sink.
	RunBy []topology.Replica `json:"run_by"`
	// Known are the sinks the config names and the dispatchers run, when
	// Sink is none of them (a typo, or a sink not rolled out yet).
	Known []string `json:"known_sinks,omitempty"`
}

// pauseTimeout bounds the whole command: the bucket, the write, the reads.
const pauseTimeout = 30 * time.Second

func setPause(ctx context.Context, s *streams, f pauseFlags, paused bool) error {
	cfg, err := loadConfig(f.Config, f.natsFlags)
	if err != nil {
		return err
	}
	toLocalServer(cfg)
	ctx, cancel := context.WithTimeout(ctx, pauseTimeout)
	defer cancel()
	conn, err := app.Connect(ctx, cfg, zap.NewNop())
	if err != nil {
		return err
	}
	defer conn.Close()
	r := pauseResult{Sink: f.Name, Paused: paused, RunBy: []topology.Replica{}}
	before, err := conn.Topo.OperatorPauses(ctx, conn.JS)
	if err != nil {
		return err
	}
	r.Was = before[f.Name].Paused
	host, _ := os.Hostname()
	// Recorded whether or not any dispatcher runs the sink: one that
	// starts it later starts it paused.
	if err := conn.Topo.SetOperatorPause(ctx, conn.JS, f.Name, topology.OperatorPause{Paused: paused, At: time.Now().UTC(), By: "cli@" + host}); err != nil {
		return err
	}
	replicas, err := conn.Topo.Replicas(ctx, conn.JS)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, sc := range cfg.Sinks {
		known[sc.Name] = true
	}
	for _, rep := range replicas {
		for _, sink := range rep.Sinks {
			known[sink] = true
		}
		if slices.Contains(rep.Sinks, f.Name) {
			r.RunBy = append(r.RunBy, rep)
		}
	}
	if !known[f.Name] {
		r.Known = slices.Sorted(func(yield func(string) bool) {
			for k := range known {
				if !yield(k) {
					return
				}
			}
		})
	}
	if f.JSON {
		return writeJSON(s.stdout, r)
	}
	printPause(s, f.Config, r)
	return nil
}

func printPause(s *streams, cfgFile string, r pauseResult) {
	w := s.stdout
	switch {
	case r.Paused && r.Was:
		fmt.Fprintf(w, "sink %s was already paused; it stays paused\n", r.Sink)
	case r.Paused:
		fmt.Fprintf(w, "sink %s paused: its events and retries wait in JetStream, nothing is delivered or dead-lettered until dispatcher sinks resume %s\n", r.Sink, r.Sink)
	case r.Was:
		fmt.Fprintf(w, "sink %s resumed: its waiting events and retries are delivered (an ordered sink's in order)\n", r.Sink)
	default:
		fmt.Fprintf(w, "sink %s was not paused; nothing changes\n", r.Sink)
	}
	verb := map[bool]string{true: "stop pulling it", false: "pull it again"}[r.Paused]
	switch n := len(r.RunBy); n {
	case 0:
		fmt.Fprintf(w, "no dispatcher runs sink %s now; the state is recorded, and one that starts it follows it\n", r.Sink)
	case 1:
		fmt.Fprintf(w, "1 dispatcher runs it and will %s within seconds (chapar_sink_paused, /readyz):\n", verb)
		fmt.Fprintf(w, "  %s\n", r.RunBy[0])
	default:
		fmt.Fprintf(w, "%d dispatchers run it and will %s within seconds (chapar_sink_paused, /readyz):\n", n, verb)
		for _, rep := range r.RunBy {
			fmt.Fprintf(w, "  %s\n", rep)
		}
	}
	if r.Known != nil {
		var where string
		if cfgFile != "" {
			where = " in " + cfgFile
		}
		names := "none"
		if len(r.Known) > 0 {
			names = strings.Join(r.Known, ", ")
		}
		fmt.Fprintf(s.stderr, "note: no sink %q is configured%s or run by a dispatcher (known sinks: %s); recorded anyway: a typo?\n", r.Sink, where, names)
	}
}

// consolePauses lets the console pause and resume sinks: the same record
// as dispatcher sinks pause writes.
type consolePauses struct{ conn *app.Conn }

func (p consolePauses) SetPaused(ctx context.Context, sink string, paused bool, by string) error {
	host, _ := os.Hostname()
	return p.conn.Topo.SetOperatorPause(ctx, p.conn.JS, sink, topology.OperatorPause{Paused: paused, At: time.Now().UTC(), By: by + "@" + host})
}
