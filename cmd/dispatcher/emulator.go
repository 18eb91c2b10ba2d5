package main

import (
	"context"
	"fmt"
	"io"

	"github.com/chapar-dev/chapar/internal/emulator"
)

func emulatorCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("emulator", stderr)
	addrs := map[string]*string{
		emulator.Chabok:        fs.String("chabok", "127.0.0.1:9101", "Chabok listen address"),
		emulator.MetrixS2S:     fs.String("metrix-s2s", "127.0.0.1:9102", "Metrix legacy S2S listen address"),
		emulator.MetrixGateway: fs.String("metrix-gateway", "127.0.0.1:9103", "Metrix gateway listen address"),
		emulator.Kenar:         fs.String("kenar", "127.0.0.1:9104", "Divar Kenar listen address"),
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
