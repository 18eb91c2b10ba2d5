// Package app wires Chapar's parts from a config: the logger, the NATS
// connection (or an embedded server), the topology and the sinks.
package app

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/embedded"
	"github.com/chapar-dev/chapar/internal/topology"
)

// NewLogger builds the process logger, writing to w: JSON for production,
// console for people.
func NewLogger(format, level string, w io.Writer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("dispatcher.log_level: %w", err)
	}
	var enc zapcore.Encoder
	if format == "console" {
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.TimeEncoderOfLayout(time.TimeOnly)
		enc = zapcore.NewConsoleEncoder(ec)
	} else {
		ec := zap.NewProductionEncoderConfig()
		ec.TimeKey = "time"
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	}
	return zap.New(zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), lvl), zap.AddCaller()), nil
}

// Conn is a JetStream connection, and the embedded server behind it if the
// process runs one.
type Conn struct {
	NC     *nats.Conn
	JS     jetstream.JetStream
	Server *server.Server
	Topo   topology.Topology
}

// Close drains the connection and stops the embedded server.
func (c *Conn) Close() {
	if c.NC != nil {
		// Closing on purpose is no disconnection: without this, every
		// clean stop ended with a WARN "NATS disconnected".
		c.NC.SetDisconnectErrHandler(nil)
		_ = c.NC.Drain()
		for i := 0; i < 50 && !c.NC.IsClosed(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
	}
	if c.Server != nil {
		c.Server.Shutdown()
		c.Server.WaitForShutdown()
	}
}

// Connect joins the configured NATS deployment, or starts an embedded
// JetStream server when nats.url is empty.
func Connect(ctx context.Context, cfg *config.Config, log *zap.Logger) (*Conn, error) {
	c := &Conn{Topo: topology.New(cfg.Streams)}
	url, from := cfg.NATS.URL, cfg.NATS.URLFrom
	if from == "" {
		from = "nats.url"
	}
	if url == "" {
		if err := os.MkdirAll(cfg.NATS.Embedded.DataDir, 0o750); err != nil {
			return nil, fmt.Errorf("nats.embedded.data_dir: %w", err)
		}
		s, err := embedded.Start(embedded.Options{Listen: cfg.NATS.Embedded.Listen, DataDir: cfg.NATS.Embedded.DataDir,
			Token: cfg.NATS.Embedded.Token.Value()})
		if err != nil {
			return nil, err
		}
		c.Server = s
		url, from = s.ClientURL(), "the embedded server, nats.embedded"
		log.Info("embedded JetStream started", zap.String("url", url), zap.String("data_dir", cfg.NATS.Embedded.DataDir))
	}
	n := cfg.NATS
	if c.Server != nil && n.Token == "" {
		n.Token = n.Embedded.Token // the embedded server's own clients
	}
	opts, err := natsOptions(n, log)
	if err != nil {
		c.Close()
		return nil, err
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		c.Close()
		// Where the URL came from: the file, a flag or a variable.
		return nil, fmt.Errorf("connect to NATS at %s (%s): %w", config.RedactURL(url), from, err)
	}
	c.NC = nc
	js, err := jetstream.New(nc)
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("jetstream: %w", err)
	}
	c.JS = js
	return c, nil
}

func natsOptions(n config.NATS, log *zap.Logger) ([]nats.Option, error) {
	opts := []nats.Option{
		nats.Name(n.Name),
		nats.Timeout(n.Timeout),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("NATS disconnected", zap.Error(err))
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("NATS reconnected", zap.String("url", c.ConnectedUrlRedacted()))
		}),
		// Errors the client meets away from any call (a subscription
		// that fell behind and dropped messages: a pull's delivery then
		// comes again after ack_wait; a permission refused): nats.go
		// prints them to stderr as plain text when no handler is set,
		// outside the dispatcher's log and its level.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			fields := []zap.Field{zap.Error(err)}
			if sub != nil {
				fields = append(fields, zap.String("subject", sub.Subject))
			}
			log.Warn("NATS asynchronous error", fields...)
		}),
	}
	if n.User != "" {
		opts = append(opts, nats.UserInfo(n.User, n.Password.Value()))
	}
	if n.Token != "" {
		opts = append(opts, nats.Token(n.Token.Value()))
	}
	if n.Creds != "" {
		opts = append(opts, nats.UserCredentials(n.Creds))
	}
	if n.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(n.NKeyFile)
		if err != nil {
			return nil, fmt.Errorf("nats.nkey_file: %w", err)
		}
		opts = append(opts, o)
	}
	if n.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(n.TLS.CAFile))
	}
	if n.TLS.CertFile != "" {
		opts = append(opts, nats.ClientCert(n.TLS.CertFile, n.TLS.KeyFile))
	}
	return opts, nil
}
