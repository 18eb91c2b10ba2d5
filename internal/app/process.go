package app

import (
	"context"
	"errors"
	"fmt"
	"io"

	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/buildinfo"
	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/opsevents"
)

// Options are what a command adds to the dispatcher its config describes.
type Options struct {
	// LogOutput receives the log (the process's stderr).
	LogOutput io.Writer
	// Observer counts what happens (nil: a dispatch.Tally).
	Observer dispatch.Observer
	// Tracer makes a span per delivery attempt (nil: none).
	Tracer trace.TracerProvider
	// Ready, if set, is called once every consumer is bound.
	Ready func()
}

// Process is a dispatcher built from a checked config and connected to
// JetStream (or to the embedded server it started), not yet consuming.
// dispatcher run and dispatcher demo are each one.
type Process struct {
	Config     *config.Config
	Log        *zap.Logger
	Conn       *Conn
	Dispatcher *dispatch.Dispatcher
	// Ops publishes the operational events (nil: ops_events.enabled is
	// false).
	Ops *opsevents.Publisher
}

// Start builds the process in the order that fails soonest: the logger,
// the sinks (a sink the config cannot work with fails before anything
// connects), then the connection and the server's max_payload check.
// Close releases what Start returns.
func Start(ctx context.Context, cfg *config.Config, o Options) (*Process, error) {
	if o.LogOutput == nil {
		o.LogOutput = io.Discard
	}
	log, err := NewLogger(cfg.Dispatcher.LogFormat, cfg.Dispatcher.LogLevel, o.LogOutput)
	if err != nil {
		return nil, errors.New(cfg.Redact(err.Error()))
	}
	obs, ops := observers(cfg, o.Observer, log)
	d, err := dispatch.New(cfg, dispatch.Options{Observer: obs, Logger: log, Tracer: o.Tracer, Ready: o.Ready})
	if err != nil {
		return nil, errors.New("config: " + cfg.Redact(err.Error())) // no secret in the output
	}
	build := buildinfo.Read()
	log.Info("chapar dispatcher starting", zap.String("version", build.Version), zap.String("go_version", build.GoVersion))
	for _, w := range cfg.Warnings() {
		log.Warn("config: " + w) // a warning names its key, never a value
	}
	conn, err := Connect(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	if err := config.CheckMaxPayload(cfg.Streams, conn.NC.MaxPayload()); err != nil {
		conn.Close()
		return nil, fmt.Errorf("config: %w", err)
	}
	return &Process{Config: cfg, Log: log, Conn: conn, Dispatcher: d, Ops: ops}, nil
}

// observers composes what the engine reports to: the command's observer
// (the metrics, the demo's tally) and, with ops_events.enabled, the ops
// events publisher, which counts its own outcomes in the command's
// observer when that can (the metrics). The one place they are composed.
func observers(cfg *config.Config, obs dispatch.Observer, log *zap.Logger) (dispatch.Observer, *opsevents.Publisher) {
	if obs == nil {
		obs = dispatch.NewTally()
	}
	if !cfg.OpsEvents.Enabled {
		return obs, nil
	}
	counts, _ := obs.(opsevents.Counts)
	ops := opsevents.New(cfg, log, counts)
	return dispatch.Observers(obs, ops), ops
}

// Run consumes until ctx is done, then drains (dispatch.Dispatcher.Run).
// The ops events publisher runs beside it and stops after it, so what
// the drain reports is published too (for at most a couple of seconds).
func (p *Process) Run(ctx context.Context) error {
	if p.Ops == nil {
		return p.Dispatcher.Run(ctx, p.Conn.JS)
	}
	octx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan struct{})
	go func() { defer close(done); p.Ops.Run(octx, p.Conn.JS) }()
	err := p.Dispatcher.Run(ctx, p.Conn.JS)
	stop()
	<-done
	return err
}

// Close closes the connection, stops the embedded server and flushes the
// log.
func (p *Process) Close() {
	p.Conn.Close()
	_ = p.Log.Sync()
}
