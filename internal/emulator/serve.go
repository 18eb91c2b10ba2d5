package emulator

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"
)

// Listener is one vendor served on an address.
type Listener struct {
	Vendor string
	Addr   string // host:port actually bound
	URL    string // base URL for the sink's base_url
}

// BaseURL is the base_url a sink uses to reach an emulated vendor at addr.
func BaseURL(vendor, addr string) string {
	return "http://" + addr + handlers[vendor].BasePath
}

// Serve binds each vendor to its address (port 0 picks one) and serves
// until ctx is done. It returns once every listener is bound.
func (e *Emulator) Serve(ctx context.Context, addrs map[string]string) ([]Listener, error) {
	var out []Listener
	var servers []*http.Server
	for _, name := range e.Names() {
		addr, ok := addrs[name]
		if !ok {
			continue
		}
		ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
		if err != nil {
			for _, s := range servers {
				_ = s.Close()
			}
			return nil, fmt.Errorf("emulator: %s on %s: %w", name, addr, err)
		}
		srv := &http.Server{Handler: e.vendors[name], ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, srv)
		// Serve returns when ctx shuts the server down.
		go func() { _ = srv.Serve(ln) }()
		bound := ln.Addr().String()
		out = append(out, Listener{Vendor: name, Addr: bound, URL: BaseURL(name, bound)})
	}
	context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		for _, s := range servers {
			_ = s.Shutdown(sctx)
		}
	})
	return out, nil
}
