// Package embedded runs a nats-server with JetStream inside the dispatcher
// process: the laptop default, and the real server every test uses.
package embedded

import (
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options of an embedded server.
type Options struct {
	// Listen is host:port; port 0 picks a free one (tests).
	Listen  string
	DataDir string
	// MaxPayload bounds one message; it must exceed the streams' max
	// message size so that JetStream, not the connection, rejects an
	// oversized envelope with a clear error.
	MaxPayload int32
	// Cluster, when set, joins this server to a cluster (tests of scale).
	ClusterName   string
	ClusterListen string
	Routes        []string
	ServerName    string
	// Token, when set, is required of every client.
	Token string
}

// Start runs a server and waits until it accepts clients.
func Start(o Options) (*server.Server, error) {
	host, portStr, err := net.SplitHostPort(o.Listen)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: listen %q: %w", o.Listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: port %q: %w", portStr, err)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	} else {
		if err := listenable(o.Listen); err != nil {
			return nil, fmt.Errorf("embedded nats: cannot listen on %s (another dispatcher or nats-server? set nats.embedded.listen, or nats.url to join it): %w", o.Listen, err)
		}
	}
	if o.MaxPayload == 0 {
		o.MaxPayload = 8 << 20
	}
	opts := &server.Options{
		ServerName: o.ServerName,
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   o.DataDir,
		MaxPayload: o.MaxPayload,
		NoSigs:     true,
		NoLog:      true,
	}
	if o.Token != "" {
		opts.Authorization = o.Token
	}
	if o.ClusterName != "" {
		ch, cp, err := net.SplitHostPort(o.ClusterListen)
		if err != nil {
			return nil, fmt.Errorf("embedded nats: cluster listen %q: %w", o.ClusterListen, err)
		}
		opts.Cluster.Name = o.ClusterName
		opts.Cluster.Host = ch
		opts.Cluster.Port, _ = strconv.Atoi(cp)
		if opts.Cluster.Port != 0 {
			if err := listenable(o.ClusterListen); err != nil {
				return nil, fmt.Errorf("embedded nats: cannot listen for routes on %s: %w", o.ClusterListen, err)
			}
		}
		opts.Routes = server.RoutesFromStr(joinRoutes(o.Routes))
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(readyWait) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded nats: not ready on %s after %s: JetStream still recovering its store in %s (a large one, or a slow disk), "+
			"or the port taken", o.Listen, readyWait, o.DataDir)
	}
	return s, nil
}

// listenable says whether addr can be listened on now. The server only
// logs a taken client port and only records a taken route port (then
// ReadyForConnections waits out readyWait): Start says so at once instead.
func listenable(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return l.Close()
}

// readyWait bounds the wait for the server to take clients. It includes
// JetStream recovering its streams from disk, which on a restart with a
// large store, or a machine under load, takes more than a few seconds
// (a restarted node of a test cluster was not ready after 10 s on a CI
// machine running other tests).
const readyWait = time.Minute

func joinRoutes(r []string) string {
	out := ""
	for i, s := range r {
		if i > 0 {
			out += ","
		}
		out += s
	}
	return out
}

// ServerMain is nats-server's own main (the version in go.mod), for a
// program that re-executes itself as a nats-server process of its own
// (cmd/bench, the record-subject measurement): the server's CPU and
// memory are then measured apart from the program's. It returns the
// exit code.
func ServerMain(args []string) int {
	fs := flag.NewFlagSet("nats-server", flag.ExitOnError)
	opts, err := server.ConfigureOptions(fs, args, server.PrintServerAndExit, fs.Usage, server.PrintTLSHelpAndDie)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats-server:", err)
		return 1
	}
	s, err := server.NewServer(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "nats-server:", err)
		return 1
	}
	s.ConfigureLogger()
	if err := server.Run(s); err != nil {
		fmt.Fprintln(os.Stderr, "nats-server:", err)
		return 1
	}
	s.WaitForShutdown()
	return 0
}
