package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// healthCmd asks a running dispatcher's /readyz; the image has no curl, so
// container health checks call this.
type cliHealth struct {
	Addr string `default:"127.0.0.1:9090" help:"The dispatcher's admin.listen (or admin.probe_listen) address." placeholder:"HOST:PORT"`
}

func (c *cliHealth) Run(ctx context.Context, s *streams) error {
	return healthCmd(ctx, &c.Addr, s.stdout)
}

func healthCmd(ctx context.Context, addr *string, stdout io.Writer) error {
	host := *addr
	if strings.HasPrefix(host, ":") {
		host = "127.0.0.1" + host
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/readyz", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("not reachable: %w", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("not ready: %s", strings.TrimSpace(string(body)))
	}
	fmt.Fprint(stdout, string(body))
	return nil
}
