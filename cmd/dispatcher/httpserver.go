package main

import (
	"net"
	"net/http"
	"sync"
	"time"
)

// serverLimits bound every phase of a request to the admin and webhook
// listeners, so a slow or hostile client cannot hold a connection (and a
// file descriptor, shared with the embedded NATS) for ever.
type serverLimits struct {
	ReadHeaderTimeout time.Duration // the request line and headers
	ReadTimeout       time.Duration // the whole request, body included
	WriteTimeout      time.Duration // from the end of the headers to the end of the response
	IdleTimeout       time.Duration // a kept-alive connection between requests
	MaxHeaderBytes    int
	MaxBodyBytes      int64
	MaxConns          int // connections served at once; more wait to be accepted
}

var defaultLimits = serverLimits{
	ReadHeaderTimeout: 5 * time.Second,
	ReadTimeout:       15 * time.Second,
	WriteTimeout:      30 * time.Second,
	IdleTimeout:       60 * time.Second,
	MaxHeaderBytes:    16 << 10,
	MaxBodyBytes:      1 << 20,
	MaxConns:          512,
}

// probeLimits bound the probe listener (admin.probe_listen). Its requests
// are an orchestrator's GETs with no body, answered at once, so every
// phase is short: a client that does not send its request within a second
// is cut, and the listener holds few connections. Slow clients of the
// admin and webhook listeners cannot reach it, which is why it exists:
// their caps (MaxConns) are shared by every client, so 512 slow ones make
// an ordinary request wait for ReadTimeout, and a probe that waits gets a
// healthy dispatcher restarted.
var probeLimits = serverLimits{
	ReadHeaderTimeout: time.Second,
	ReadTimeout:       2 * time.Second,
	WriteTimeout:      5 * time.Second,
	IdleTimeout:       30 * time.Second,
	MaxHeaderBytes:    8 << 10,
	MaxBodyBytes:      1 << 10,
	MaxConns:          64,
}

// runLimits are the limits dispatcher run serves with (tests shorten them).
var runLimits = defaultLimits

// newServer is an http.Server for h with every limit set.
func newServer(h http.Handler, l serverLimits) *http.Server {
	return &http.Server{
		Handler:           http.MaxBytesHandler(h, l.MaxBodyBytes),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		ReadTimeout:       l.ReadTimeout,
		WriteTimeout:      l.WriteTimeout,
		IdleTimeout:       l.IdleTimeout,
		MaxHeaderBytes:    l.MaxHeaderBytes,
	}
}

// limitListener accepts at most n connections at once.
func limitListener(ln net.Listener, n int) net.Listener {
	if n <= 0 {
		return ln
	}
	return &limitedListener{Listener: ln, sem: make(chan struct{}, n)}
}

type limitedListener struct {
	net.Listener
	sem chan struct{}
}

func (l *limitedListener) Accept() (net.Conn, error) {
	l.sem <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.sem
		return nil, err
	}
	return &limitedConn{Conn: c, release: func() { <-l.sem }}, nil
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}
