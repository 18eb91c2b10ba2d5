// Package testenv is the real environment Chapar's tests run in: an
// embedded JetStream server in a temporary directory and the vendor
// emulator on loopback HTTP servers. No fakes.
package testenv

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/embedded"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/freeport"
	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Env is one test's world.
type Env struct {
	T       testing.TB
	Server  *server.Server
	NC      *nats.Conn
	JS      jetstream.JetStream
	Streams config.Streams
	Topo    topology.Topology
	Emu     *emulator.Emulator
	// URL is each emulated vendor's base_url.
	URL map[string]string
	Log *zap.Logger
	// Servers are the NATS servers (one, or a cluster's nodes); clients
	// connect to all of them for failover.
	Servers []*server.Server
	// Tracer, if set, traces the dispatchers started after it is set.
	Tracer trace.TracerProvider
	// nodes are New's server or a cluster's, to restart them by.
	nodes []*node
}

// node is a server's options and the server now running on them. Its
// shutdown, registered when the node first starts, stops whichever server
// RestartServer has left on it by then.
type node struct {
	opts   embedded.Options
	server *server.Server
}

func (n *node) shutdown() { n.server.Shutdown(); n.server.WaitForShutdown() }

// New starts the embedded server and the emulator; both stop with the test.
func New(t testing.TB) *Env {
	t.Helper()
	// A fixed address below the ephemeral range (FreeAddr): RestartServer
	// listens on it again, so clients reconnect to it, and a port from :0
	// could meanwhile be another connection's.
	o := embedded.Options{Listen: FreeAddr(t), DataDir: t.TempDir()}
	s, err := embedded.Start(o)
	if err != nil {
		t.Fatal(err)
	}
	nd := &node{opts: o, server: s}
	t.Cleanup(nd.shutdown)
	e := newEnv(t, []*server.Server{s}, 1, true)
	e.nodes = []*node{nd}
	return e
}

// NewPartitioned is New with the events spread over n partition streams
// (streams.partitions).
func NewPartitioned(t testing.TB, n int) *Env {
	t.Helper()
	s, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	e := newEnv(t, []*server.Server{s}, 1, false)
	e.Streams.Partitions = n
	e.Topo = topology.New(e.Streams)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Topo.Ensure(ctx, e.JS); err != nil {
		t.Fatal(err)
	}
	return e
}

// NewCluster starts an n-node JetStream cluster on loopback, with streams
// replicated on every node.
func NewCluster(t testing.TB, n int) *Env {
	t.Helper()
	return newCluster(t, n, true)
}

// NewFormingCluster is NewCluster without waiting for the cluster to elect
// its JetStream leader and create the streams: what a dispatcher started
// together with a fresh cluster meets.
func NewFormingCluster(t testing.TB, n int) *Env {
	t.Helper()
	return newCluster(t, n, false)
}

func newCluster(t testing.TB, n int, ready bool) *Env {
	t.Helper()
	ports := make([]string, n)
	for i := range ports {
		ports[i] = FreeAddr(t)
	}
	servers := make([]*server.Server, n)
	nodes := make([]*node, n)
	for i := range n {
		var routes []string
		for j, p := range ports {
			if j != i {
				routes = append(routes, "nats://"+p)
			}
		}
		o := embedded.Options{
			// Fixed client and route addresses: a restarted node comes
			// back on both (New's comment).
			Listen: FreeAddr(t), DataDir: t.TempDir(), ServerName: fmt.Sprintf("n%d", i+1),
			ClusterName: "chapar-test", ClusterListen: ports[i], Routes: routes,
		}
		s, err := embedded.Start(o)
		if err != nil {
			t.Fatal(err)
		}
		servers[i] = s
		nodes[i] = &node{opts: o, server: s}
		t.Cleanup(nodes[i].shutdown)
	}
	e := newEnv(t, servers, n, ready)
	e.nodes = nodes
	return e
}

// RestartServer stops server i (New's one server, or a cluster's node)
// and starts it again on the same storage and addresses, as a restart of
// nats-server, or a rolling restart of the cluster, does.
// It returns once the server accepts clients again; JetStream's groups
// on it catch up after.
//
// The server started again stops with the test where the node's first
// server would have: after the dispatchers and connections started since.
// (With a shutdown of its own, registered here, it stopped first: a test
// that restarted two of a cluster's three nodes left its dispatchers'
// drains without a quorum, waiting out their timeouts, 12 to 37 s.)
func (e *Env) RestartServer(i int) {
	e.T.Helper()
	if i >= len(e.nodes) {
		e.T.Fatalf("server %d cannot be restarted (New and NewCluster's servers can)", i)
	}
	nd := e.nodes[i]
	nd.server.Shutdown()
	nd.server.WaitForShutdown()
	s, err := embedded.Start(nd.opts)
	if err != nil {
		e.T.Fatal(err)
	}
	nd.server = s
	e.Servers[i] = s
	if i == 0 {
		e.Server = s
	}
}

// FreeAddr is a loopback host:port nobody listens on (yet), below the
// kernel's ephemeral range, so no other listener or connection is given it
// before its server listens, or while that server restarts (freeport).
func FreeAddr(t testing.TB) string {
	t.Helper()
	return freeport.Addr(t)
}

func newEnv(t testing.TB, servers []*server.Server, replicas int, ensure bool) *Env {
	t.Helper()
	e := &Env{T: t, Server: servers[0], Servers: servers, Log: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))}
	e.NC, e.JS = e.Connect()
	e.Streams = config.Default().Streams
	e.Streams.Replicas = replicas
	e.Topo = topology.New(e.Streams)
	// A new cluster elects its JetStream leader first: retry until then.
	deadline := time.Now().Add(30 * time.Second)
	for ensure {
		err := e.Topo.Ensure(context.Background(), e.JS)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	e.Emu = emulator.New(emulator.DemoConfig())
	e.URL = map[string]string{}
	for _, name := range e.Emu.Names() {
		srv := httptest.NewServer(e.Emu.Vendor(name))
		t.Cleanup(srv.Close)
		e.URL[name] = emulator.BaseURL(name, srv.Listener.Addr().String())
	}
	return e
}

// Connect opens another client connection (a separate "process").
func (e *Env) Connect() (*nats.Conn, jetstream.JetStream) {
	e.T.Helper()
	urls := make([]string, len(e.Servers))
	for i, s := range e.Servers {
		urls[i] = s.ClientURL()
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		e.T.Fatal(err)
	}
	return nc, js
}

// FastRetry is a policy scaled down for tests: the same shape as the
// default, in milliseconds.
func FastRetry() retry.Policy {
	return retry.Policy{
		InitialInterval: 50 * time.Millisecond, Multiplier: 2, Jitter: 0.1,
		MaxInterval: 400 * time.Millisecond, MaxAttempts: 5, MaxElapsed: time.Minute,
		MaxRetryAfter: 5 * time.Second,
	}
}

// Sink configures a sink against the emulator with the emulator's demo
// credentials (settings override them). For a vendor the emulator does not
// serve, the settings are the caller's and base_url is left to set.
func (e *Env) Sink(name, vendor string, events map[string]string, settings map[string]any) config.Sink {
	e.T.Helper()
	creds := emulator.DemoSettings(vendor)
	if creds == nil {
		creds = map[string]any{} // a vendor the emulator does not serve
	}
	for k, v := range settings {
		creds[k] = v
	}
	var node yaml.Node
	if err := node.Encode(creds); err != nil {
		e.T.Fatal(err)
	}
	return config.Sink{
		Name: name, Vendor: vendor, BaseURL: e.URL[vendor], Concurrency: 4, MaxAckPending: 1000, Timeout: 2 * time.Second,
		Events: events, Retry: FastRetry(),
		Breaker:  retry.BreakerSettings{FailureThreshold: 5, OpenTimeout: 300 * time.Millisecond, Interval: time.Minute},
		Settings: node,
	}
}

// Dispatcher is a running dispatcher "process" with its own connection.
type Dispatcher struct {
	Tally  *dispatch.Tally
	NC     *nats.Conn
	cancel context.CancelFunc
	done   chan error
}

// Start runs a dispatcher over the given sinks and routes until Stop.
func (e *Env) Start(sinkCfgs []config.Sink, routes []config.Route, opts ...func(*config.Dispatcher)) *Dispatcher {
	e.T.Helper()
	return e.StartWrapped(sinkCfgs, routes, nil, opts...)
}

// Config is the config a test dispatcher runs: the test's streams, sinks
// and routes, the default dispatcher settings with short waits.
func (e *Env) Config(sinkCfgs []config.Sink, routes []config.Route, opts ...func(*config.Dispatcher)) *config.Config {
	cfg := config.Default()
	cfg.Streams = e.Streams
	cfg.Sinks, cfg.Routes = sinkCfgs, routes
	cfg.Dispatcher.AckWait = 5 * time.Second
	cfg.Dispatcher.ShutdownGrace = 3 * time.Second
	for _, o := range opts {
		o(&cfg.Dispatcher)
	}
	return cfg
}

// StartWrapped is Start with each built sink passed through wrap (a test's
// faults around a real sink).
func (e *Env) StartWrapped(sinkCfgs []config.Sink, routes []config.Route, wrap func(string, sinks.Sink) sinks.Sink, opts ...func(*config.Dispatcher)) *Dispatcher {
	e.T.Helper()
	nc, js := e.Connect()
	disp, err := e.startOn(nc, js, sinkCfgs, routes, wrap, opts...)
	if err != nil {
		e.T.Fatal(err)
	}
	return disp
}

// TryStart is Start for a goroutine other than the test's: it returns the
// error instead of failing the test (t.Fatal ends only the goroutine that
// calls it, and a test waiting for that goroutine would hang).
func (e *Env) TryStart(sinkCfgs []config.Sink, routes []config.Route, opts ...func(*config.Dispatcher)) (*Dispatcher, error) {
	urls := make([]string, len(e.Servers))
	for i, s := range e.Servers {
		urls[i] = s.ClientURL()
	}
	nc, err := nats.Connect(strings.Join(urls, ","), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		return nil, err
	}
	e.T.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return e.startOn(nc, js, sinkCfgs, routes, nil, opts...)
}

// startDeadline bounds a start. A dispatcher binds in well under a second
// on a ready server; a three-node cluster that is still forming, on a
// loaded 2-core machine under the race detector, took over 60 s (each of
// its bind's first JetStream calls ran into the call's 10 s deadline while
// the new streams' groups elected their leaders, the retry then passing).
const startDeadline = 2 * time.Minute

func (e *Env) startOn(nc *nats.Conn, js jetstream.JetStream, sinkCfgs []config.Sink, routes []config.Route, wrap func(string, sinks.Sink) sinks.Sink, opts ...func(*config.Dispatcher)) (*Dispatcher, error) {
	tally := dispatch.NewTally()
	ready := make(chan struct{})
	d, err := dispatch.New(e.Config(sinkCfgs, routes, opts...), dispatch.Options{
		Observer: tally, Logger: e.Log, Ready: func() { close(ready) }, Wrap: wrap, Tracer: e.Tracer,
	})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx, js) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("dispatcher did not start: %w", err)
	case <-time.After(startDeadline):
		cancel()
		return nil, fmt.Errorf("dispatcher did not start in %s", startDeadline)
	}
	disp := &Dispatcher{Tally: tally, NC: nc, cancel: cancel, done: done}
	e.T.Cleanup(func() { disp.Stop() })
	return disp, nil
}

// Stop signals a graceful drain and waits for Run to return.
func (d *Dispatcher) Stop() error {
	d.cancel()
	select {
	case err, ok := <-d.done:
		if ok {
			close(d.done)
		}
		return err
	case <-time.After(30 * time.Second):
		return context.DeadlineExceeded
	}
}

// Kill drops the dispatcher's connection as a SIGKILL would: nothing more
// is acked or handed back.
func (d *Dispatcher) Kill() {
	d.NC.Close()
	d.cancel()
}

// Publish publishes an envelope as a producer would, with its id as the
// JetStream message id.
func (e *Env) Publish(env *envelope.Envelope) *jetstream.PubAck {
	e.T.Helper()
	raw, err := env.Marshal()
	if err != nil {
		e.T.Fatal(err)
	}
	return e.PublishRaw(e.Topo.SubjectOf(env), env.ID, raw)
}

// PublishRaw publishes arbitrary bytes (for malformed envelopes).
func (e *Env) PublishRaw(subject, msgID string, raw []byte) *jetstream.PubAck {
	e.T.Helper()
	var opts []jetstream.PublishOpt
	if msgID != "" {
		opts = append(opts, jetstream.WithMsgID(msgID))
	}
	ack, err := e.JS.Publish(context.Background(), subject, raw, opts...)
	if err != nil {
		e.T.Fatalf("publish: %v", err)
	}
	return ack
}

// Idle reports whether the given sinks have nothing pending, in flight or
// waiting to be retried.
func (e *Env) Idle(sinks ...string) bool {
	ok, err := e.Topo.Idle(context.Background(), e.JS, sinks)
	return err == nil && ok
}

// Eventually polls cond until it holds or the timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Track builds a valid track envelope for a user.
func Track(t testing.TB, name, userID string, opts ...envelope.Option) *envelope.Envelope {
	t.Helper()
	env, err := envelope.New(envelope.TypeTrack, "test", envelope.Track{
		Name:       name,
		Properties: map[string]any{"orderId": "A-1", "items": 3},
		User: envelope.User{
			ID: userID, ChabokInstallationID: "inst-" + userID, MetrixUserID: "mx-" + userID,
			MetrixSessionID: "sess-1", AdvertisingID: "ad-" + userID, IP: "203.0.113.7",
		},
	}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return env
}
