// Command dispatcher is Chapar's server and admin tool.
//
//	dispatcher run      [--config FILE] [--nats-url URL]   serve: route and deliver events
//	dispatcher demo                                          the one-command tour
//	dispatcher dlq      list|stats|show|replay|purge         dead letters
//	dispatcher emulator [--chabok ADDR] ...                  the local vendor emulator
//	dispatcher kenar    subscribe ...                        register a Kenar subscription
//	dispatcher health   [--addr HOST:PORT]                   is a running dispatcher ready?
//	dispatcher version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/chapar-dev/chapar/internal/sinks"
)

const usage = `Chapar dispatcher: delivers events from NATS JetStream to vendor APIs.

Usage:
  dispatcher run      [--config FILE] [--nats-url URL]  serve (embedded JetStream when no NATS URL)
  dispatcher demo                                        run the end-to-end tour and print a summary
  dispatcher dlq      list|stats|show|replay|purge       inspect and replay dead letters
  dispatcher emulator [flags]                            serve the local vendor emulator
  dispatcher kenar    subscribe [flags]                  register a Divar Kenar event subscription
  dispatcher health   [--addr HOST:PORT]                 exit 0 if a running dispatcher is ready (for container health checks)
  dispatcher version

Run "dispatcher COMMAND -h" for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := runCommand(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "dispatcher:", err)
		}
		os.Exit(exitCode(err))
	}
}

// usageError marks a command-line mistake (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

func runCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"no command given"}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return runCmd(ctx, rest, stderr)
	case "demo":
		return demoCmd(ctx, rest, stdout, stderr)
	case "dlq":
		return dlqCmd(ctx, rest, stdout, stderr)
	case "emulator":
		return emulatorCmd(ctx, rest, stdout, stderr)
	case "kenar":
		return kenarCmd(ctx, rest, stdout, stderr)
	case "health":
		return healthCmd(ctx, rest, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "chapar dispatcher", sinks.Version)
		return nil
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", cmd)}
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("dispatcher "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}
