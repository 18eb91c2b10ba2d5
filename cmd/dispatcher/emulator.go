package main

import (
	"context"
	"fmt"
	"io"

	"github.com/chapar-dev/chapar/internal/emulator"
)

func emulatorCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("emulator", stderr)
	addrs := map[string]*string{}
	for _, h := range emulator.Handlers() {
		addrs[h.Name] = fs.String(h.Name, h.Listen, "emulated "+h.Name+" listen address")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	listen := map[string]string{}
	for k, v := range addrs {
		listen[k] = *v
	}
	cfg := emulator.DemoConfig()
	ls, err := emulator.New(cfg).Serve(ctx, listen)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "Vendor emulator (credentials as in configs/demo.yaml; Ctrl-C stops):")
	for _, l := range ls {
		fmt.Fprintf(stdout, "  %-15s base_url: %s   faults: %s/_emulator/fault\n", l.Vendor, l.URL, "http://"+l.Addr)
	}
	<-ctx.Done()
	return nil
}
