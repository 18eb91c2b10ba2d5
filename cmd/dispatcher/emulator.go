package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/chapar-dev/chapar/internal/emulator"
)

type cliEmulator struct {
	Args []string `arg:"" optional:"" passthrough:""`
}

// Run parses the emulator's own flags (one listen address per emulated
// vendor) with the standard library, and gives them the shape of every
// other command: help on stdout, mistakes on stderr with exit 2.
func (c *cliEmulator) Run(ctx context.Context, s *streams) error {
	var out bytes.Buffer
	err := emulatorCmd(ctx, c.Args, s.stdout, &out)
	switch {
	case errors.Is(err, flag.ErrHelp):
		_, err = s.stdout.Write(out.Bytes())
		return err
	case out.Len() > 0: // the flag package printed its complaint and usage
		_, _ = s.stderr.Write(out.Bytes())
		return usageError{err.Error()}
	}
	return err
}

// newFlags is a standard-library flag set for the commands that keep one.
func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("dispatcher "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func emulatorCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("emulator", stderr)
	addrs := map[string]*string{}
	for _, h := range emulator.Handlers() {
		addrs[h.Name] = fs.String(h.Name, h.Listen, "emulated "+h.Name+" listen address")
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("emulator: unexpected argument %q (see dispatcher emulator -h)", fs.Arg(0))}
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
	// configs/local.yaml, the config README runs beside it, has its default
	// addresses and its credentials.
	fmt.Fprintln(stdout, "Vendor emulator, as configs/local.yaml expects it: its base URLs (at the default addresses) and credentials (Ctrl-C stops):")
	for _, l := range ls {
		fmt.Fprintf(stdout, "  %-15s base_url: %s   faults: %s/_emulator/fault\n", l.Vendor, l.URL, "http://"+l.Addr)
	}
	<-ctx.Done()
	return nil
}
