package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/app"
	"github.com/chapar-dev/chapar/internal/buildinfo"
	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/console"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/heapfloor"
	"github.com/chapar-dev/chapar/internal/inbound"
	"github.com/chapar-dev/chapar/internal/lookup"
	"github.com/chapar-dev/chapar/internal/metrics"
	"github.com/chapar-dev/chapar/internal/opsevents"
	"github.com/chapar-dev/chapar/internal/redeliver"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/internal/tracing"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// loadConfig reads --config (or the defaults) with the connection flags
// over its nats keys, and checks the config's own keys: what the commands
// that only talk to NATS need.
func loadConfig(file string, n natsFlags) (*config.Config, error) {
	src, err := configSource(file, n)
	if err != nil {
		return nil, err
	}
	return app.LoadConfig(src)
}

// toLocalServer points a tool's config with no nats.url at a local
// dispatcher run's embedded server, with its token if any.
func toLocalServer(cfg *config.Config) {
	if cfg.NATS.URL == "" {
		cfg.NATS.URL = "nats://" + cfg.NATS.Embedded.Listen
		if cfg.NATS.Token == "" {
			cfg.NATS.Token = cfg.NATS.Embedded.Token
		}
	}
}

// configSource is --config with the connection flags: a flag, else
// $NATS_URL, else the --context's, else the file's key.
func configSource(file string, n natsFlags) (app.ConfigSource, error) {
	src := app.ConfigSource{File: file, LookupEnv: os.LookupEnv}
	urlFrom := "--server"
	if n.Server == "" {
		if v, ok := os.LookupEnv("NATS_URL"); ok && v != "" {
			n.Server, urlFrom = v, "$NATS_URL"
		}
	}
	var nctx *natsContext
	if n.Context != "" {
		var err error
		if nctx, err = loadNATSContext(n.Context); err != nil {
			return src, err
		}
		if n.Server == "" && nctx.URL != "" {
			urlFrom = "--context " + n.Context
		}
	}
	if n == (natsFlags{}) {
		return src, nil
	}
	src.Override = func(cfg *config.Config) {
		if nctx != nil {
			nctx.apply(&n, &cfg.NATS)
		}
		for _, o := range []struct {
			flag string
			key  *string
		}{
			{n.Server, &cfg.NATS.URL}, {n.Creds, &cfg.NATS.Creds}, {n.NKey, &cfg.NATS.NKeyFile},
			{n.TLSCert, &cfg.NATS.TLS.CertFile}, {n.TLSKey, &cfg.NATS.TLS.KeyFile}, {n.TLSCA, &cfg.NATS.TLS.CAFile},
		} {
			if o.flag != "" {
				*o.key = o.flag
			}
		}
		if n.Server != "" {
			cfg.NATS.URLFrom = urlFrom
		}
		if n.NKey != "" && n.Creds == "" {
			cfg.NATS.Creds = "" // --nkey replaces the file's creds_file, not adds to it
		}
		if n.Creds != "" && n.NKey == "" {
			cfg.NATS.NKeyFile = ""
		}
	}
	return src, nil
}

type cliRun struct {
	Config string `help:"YAML config file (see configs/chapar.example.yaml)." placeholder:"FILE"`
	natsFlags
}

func (c *cliRun) Run(ctx context.Context, s *streams) error {
	return runCmd(ctx, c.Config, c.natsFlags, s.stderr)
}

func runCmd(ctx context.Context, file string, nf natsFlags, stderr io.Writer) error {
	if file == "" {
		return errors.New("sinks: none configured; give --config with at least one sink (see configs/chapar.example.yaml)")
	}
	src, err := configSource(file, nf)
	if err != nil {
		return err
	}
	// The one validator: every error config check reports, in one pass.
	cfg, err := app.CheckConfig(src)
	if err != nil {
		return err
	}
	// The configured sinks are the only sink labels, and Chapar's and the
	// routes' types the only type labels: a producer's destinations and
	// types must not mint series.
	sinkNames := make([]string, 0, len(cfg.Sinks))
	for _, s := range cfg.Sinks {
		sinkNames = append(sinkNames, s.Name)
	}
	m := metrics.NewFor(sinkNames, cfg.RouteTypes())
	var ready atomic.Bool
	build := buildinfo.Read()
	tp, stopTracing, err := tracing.Provider(ctx, "chapar-dispatcher", build.Version)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = stopTracing(sctx) // flush what was traced
	}()
	p, err := app.Start(ctx, cfg, app.Options{LogOutput: stderr, Observer: m, Tracer: tp, Ready: func() { ready.Store(true) }})
	if err != nil {
		return err
	}
	defer p.Close()
	log, conn := p.Log, p.Conn
	budget := uint64(cfg.Dispatcher.GCBudgetMiB) << 20
	for _, v := range []string{"GOGC", "GOMEMLIMIT"} {
		if set := os.Getenv(v); set != "" && budget > 0 {
			log.Info(v+" is set in the environment: it paces the collector, not dispatcher.gc_budget_mib", zap.String(v, set))
			budget = 0
		}
	}
	// Waited for: the process's GOGC is given back before run returns.
	gcCtx, stopPacing := context.WithCancel(ctx)
	paced := make(chan struct{})
	go func() { heapfloor.Run(gcCtx, budget, log); close(paced) }()
	defer func() { stopPacing(); <-paced }()

	if cfg.Webhook.Listen != "" {
		pub := envelope.NewPublisher(conn.JS, envelope.WithSubjectPrefix(cfg.Streams.SubjectPrefix),
			envelope.WithPartitions(cfg.Streams.Partitions), envelope.WithMaxBytes(cfg.Streams.MaxEnvelopeBytes))
		mux := http.NewServeMux()
		mux.Handle(cfg.Webhook.Path, inbound.NewKenarWebhook(pub, cfg.Webhook.IdentificationKey, cfg.Webhook.Source, log))
		// Bind before going on: a taken port fails the start with its key,
		// and the webhook accepts requests once run reports ready.
		ln, err := listen(ctx, "kenar_webhook.listen", cfg.Webhook.Listen)
		if err != nil {
			return errors.New(cfg.Redact(err.Error())) // the address may have come from a ${…}
		}
		ln = limitListener(ln, runLimits.MaxConns)
		srv := newServer(mux, runLimits)
		go func() {
			log.Info("serving the Kenar webhook", zap.String("listen", ln.Addr().String()), zap.String("path", cfg.Webhook.Path))
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("webhook server stopped", zap.Error(err))
			}
		}()
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
		}()
	}

	m.SetBuildInfo(build.Version, build.GoVersion)
	consumers := map[string][]string{}
	for _, s := range cfg.Sinks {
		consumers[topology.SinkConsumer(s.Name)] = conn.Topo.EventsStreams()
		consumers[topology.RetryConsumer(s.Name)] = []string{conn.Topo.RetriesStream()}
	}
	m.WatchConsumers(conn.JS, consumers)
	if cfg.Admin.Listen != "" {
		ln, err := listen(ctx, "admin.listen", cfg.Admin.Listen)
		if err != nil {
			return errors.New(cfg.Redact(err.Error())) // the address may have come from a ${…}
		}
		ln = limitListener(ln, runLimits.MaxConns)
		var admin http.Handler = m.Admin(conn.NC, &ready)
		if cfg.Admin.Console.Enabled {
			cons, err := newConsole(ctx, cfg, conn, m, cfg.AdminToken().Value(), log)
			if err != nil {
				return err
			}
			defer cons.Close() // after the server stops, before NATS closes
			mux := http.NewServeMux()
			mux.Handle("/", admin)
			mux.Handle(console.Prefix, cons.Handler())
			admin = mux
			log.Info("serving the web console", zap.String("url", "http://"+ln.Addr().String()+console.Prefix),
				zap.Bool("replay_and_purge", cons.MutationsEnabled()), zap.Bool("token_required", cfg.Admin.ConsoleBeyondLoopback()))
		}
		srv := newServer(admin, runLimits)
		go func() {
			log.Info("serving /metrics, /healthz, /readyz", zap.String("listen", ln.Addr().String()))
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("admin server stopped", zap.Error(err))
			}
		}()
		defer func() { _ = srv.Close() }()
	}

	if cfg.Admin.ProbeListen != "" {
		ln, err := listen(ctx, "admin.probe_listen", cfg.Admin.ProbeListen)
		if err != nil {
			return err
		}
		ln = limitListener(ln, probeLimits.MaxConns)
		srv := newServer(m.Probes(conn.NC, &ready), probeLimits)
		go func() {
			log.Info("serving /healthz, /readyz", zap.String("listen", ln.Addr().String()))
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("probe server stopped", zap.Error(err))
			}
		}()
		defer func() { _ = srv.Close() }()
	}

	err = p.Run(ctx)
	log.Info("dispatcher stopped", zap.Error(err))
	return err
}

// newConsole builds the web console over this dispatcher's dead-letter
// store (the CLI's) and its metrics' sink status.
func newConsole(ctx context.Context, cfg *config.Config, conn *app.Conn, m *metrics.Metrics, token string, log *zap.Logger) (*console.Console, error) {
	configured := make([]metrics.SinkConfig, len(cfg.Sinks))
	for i, s := range cfg.Sinks {
		configured[i] = metrics.SinkConfig{Name: s.Name, Vendor: s.Vendor}
	}
	var events console.Events
	if cfg.Streams.RecordDeliveries {
		events = lookup.Deployment{JS: conn.JS, Config: cfg}
	}
	c, err := console.New(ctx, console.Options{
		Events: events,
		// Its replay jobs report themselves (chapar.ops.replay_done).
		DeadLetters: opsevents.NewStore(dlq.NewStore(conn.JS, conn.Topo), conn.JS, cfg, "console",
			func(err error) { log.Warn("replay job", zap.Error(err)) }),
		Sinks:  m.SinkReport(conn.JS, conn.Topo, configured),
		Pauses: consolePauses{conn},
		// The same redelivery as dispatcher sinks redeliver, over this
		// dispatcher's config (its routes and rate limits).
		Redeliveries: redeliver.Runner{JS: conn.JS, Topo: conn.Topo, Config: cfg,
			Ended: func(ctx context.Context, sink string, res redeliver.Result, err error) {
				if perr := opsevents.PublishRedeliveryDone(context.WithoutCancel(ctx), conn.JS, cfg, sink, "console", res, err); perr != nil {
					log.Warn("chapar.ops.redelivery_done not published", zap.Error(perr))
				}
			}},
		Token:      token,
		Logger:     log,
		Partitions: cfg.Streams.Partitions,
		// Beyond loopback every page asks for the token: they show dead
		// letters' envelopes (CheckConsoleToken made sure there is one).
		RequireToken: cfg.Admin.ConsoleBeyondLoopback(),
	})
	if err != nil {
		return nil, fmt.Errorf("admin.console: %w", err)
	}
	return c, nil
}

// listen binds addr for the server configured at key, naming the key and the
// fix when it cannot.
func listen(ctx context.Context, key, addr string) (net.Listener, error) {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s: cannot listen on %s: %w; free the port or set %s to another host:port", key, addr, err, key)
	}
	return ln, nil
}
