// Command dispatcher is Chapar's server and admin tool.
//
//	dispatcher run      [--config FILE] [--server URL]   serve: route and deliver events
//	dispatcher demo                                        the one-command tour
//	dispatcher config   check FILE                         every error of a config file, in one pass
//	dispatcher dlq      list|stats|show|replay|purge       dead letters
//	dispatcher emulator [--chabok ADDR] ...                the local vendor emulator
//	dispatcher kenar    subscribe ...                      register a Kenar subscription
//	dispatcher health   [--addr HOST:PORT]                 is a running dispatcher ready?
//	dispatcher version  [--json]
//	dispatcher completion bash|zsh|fish
//	dispatcher help     [COMMAND...]
//
// "dispatcher COMMAND --help" (or "dispatcher help COMMAND") lists a
// command's flags.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
)

func main() {
	runtime.MemProfileRate = memProfileRate(os.Getenv("GODEBUG"), runtime.MemProfileRate)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := mainCode(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// memProfileRate is the heap profile's sampling rate: none unless GODEBUG
// sets memprofilerate (the runtime has read it by now; current is what it
// read). Nothing in Chapar serves or reads a heap profile, and the runtime
// keeps every sampled allocation's stack in a table: 1.4 MiB of the
// dispatcher's memory at 256 workers (issue 20, cmd/bench slow).
func memProfileRate(godebug string, current int) int {
	for _, kv := range strings.Split(godebug, ",") {
		if strings.HasPrefix(kv, "memprofilerate=") {
			return current
		}
	}
	return 0
}

// mainCode runs a command line as main does and returns its exit code:
// 0, 1 for a failure, 2 for a usage error; errors go to stderr, one line
// each.
func mainCode(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := runCommandIO(ctx, args, stdin, stdout, stderr)
	if err == nil {
		return 0
	}
	// An error of several lines (every problem of a config) is one line
	// each, each led by the program's name.
	for _, line := range strings.Split(err.Error(), "\n") {
		fmt.Fprintln(stderr, "dispatcher:", line)
	}
	return exitCode(err)
}
