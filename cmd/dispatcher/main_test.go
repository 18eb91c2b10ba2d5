package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kong"

	"github.com/chapar-dev/chapar/internal/config"
)

// The demo is README's first command: it must account for every event it
// publishes and show each documented vendor error once.
func TestDemoAccountsForEveryEvent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := runCommand(ctx, []string{"demo"}, &out, &errOut); err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	s := out.String()
	for _, want := range []string{
		"16 events published, 16 received, 1 unrouted.",
		"EVENT_TYPE_DOES_NOT_EXIST", "S2S_FEATURE_NOT_AVAILABLE", "INVALID_PARAMETERS", "BAD_REQUEST", "NOT_FOUND",
		"invalid_for_vendor", "invalid_envelope", "\nNext:\n", "dispatcher config check",
		// Where to go next: README's section, its config, dlq list, the admin URL.
		`README "Run it for real"`, "dispatcher run --config configs/local.yaml", "dispatcher dlq list",
		"http://127.0.0.1:9090/metrics",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	// The admin URL the demo names is the one configs/local.yaml serves.
	local, err := config.Parse([]byte(readFile(t, "../../configs/local.yaml")), nil)
	if err != nil || "http://"+local.Admin.Listen+"/metrics" != "http://127.0.0.1:9090/metrics" {
		t.Errorf("configs/local.yaml admin.listen %q (%v), but the demo points at 127.0.0.1:9090", local.Admin.Listen, err)
	}
	// configs/demo.yaml logs at info: the log on stderr shows progress
	// (the start, the retries, the dead letters), and a clean stop is
	// not reported as a lost connection.
	logs := errOut.String()
	for _, want := range []string{"INFO", "dispatcher consuming", "retry scheduled", "dead-lettered", "draining"} {
		if !strings.Contains(logs, want) {
			t.Errorf("demo log lacks %q:\n%s", want, logs)
		}
	}
	if strings.Contains(logs, "NATS disconnected") {
		t.Errorf("demo log reports its own clean stop as a disconnection:\n%s", logs)
	}
	// Per-sink lines: delivered, retried (chabok's injected 503s); the
	// webhook's receiver verified each signature.
	for _, line := range []string{"chabok           3          2", "metrix-gateway   4          0", "kenar            1          0",
		"webhook          2          0        -"} {
		if !strings.Contains(s, line) {
			t.Errorf("demo summary lacks %q:\n%s", line, s)
		}
	}
}

// Every command has one shape: help on stdout with exit 0, a usage mistake
// on stderr with exit 2, a failure on stderr, one line, with exit 1.
func TestExitCodesAndStreams(t *testing.T) {
	t.Setenv("NATS_URL", "")
	t.Setenv("NATS_CONTEXT", "")
	for _, tc := range []struct {
		args       string
		code       int
		stdout     string // "" : stdout must be empty
		stderr     string // "" : stderr must be empty
		stderrLine bool   // stderr is exactly one line
	}{
		{args: "--help", stdout: "Usage: dispatcher <command>"},
		{args: "-h", stdout: "Usage: dispatcher <command>"},
		{args: "help", stdout: "Usage: dispatcher <command>"},
		{args: "help dlq", stdout: "Usage: dispatcher dlq <command>"},
		{args: "help dlq list", stdout: "--since=WHEN"},
		{args: "help emulator", stdout: "-chabok"},
		{args: "help frobnicate", code: 2, stderr: "frobnicate", stderrLine: true},
		{args: "run --help", stdout: "--server=URL"},
		{args: "dlq list --help", stdout: "--since=WHEN"},
		{args: "dlq show --help", stdout: "<SEQ|EVENT_ID>"},
		{args: "config check --help", stdout: "--json"},
		{args: "kenar subscribe --help", stdout: "--event-type"},
		{args: "emulator -h", stdout: "-chabok"},
		{args: "emulator --help", stdout: "-chabok"},
		{args: "--version", stdout: "chapar dispatcher "},
		{args: "version", stdout: "chapar dispatcher "},
		{args: "completion bash", stdout: "complete -C "},
		{args: "", code: 2, stderr: "no command given"},
		{args: "frobnicate", code: 2, stderr: "frobnicate", stderrLine: true},
		{args: "run --frob", code: 2, stderr: "unknown flag --frob (see dispatcher run --help)", stderrLine: true},
		{args: "run stray", code: 2, stderr: "unexpected argument stray", stderrLine: true},
		{args: "run --config", code: 2, stderr: "--config", stderrLine: true},
		{args: "dlq", code: 2, stderr: `expected one of "list"`, stderrLine: true},
		{args: "dlq show", code: 2, stderr: "SEQ|EVENT_ID", stderrLine: true},
		{args: "dlq show 1 2", code: 2, stderr: "unexpected argument 2", stderrLine: true},
		{args: "dlq list gateway", code: 2, stderr: "unexpected argument gateway", stderrLine: true},
		{args: "dlq list --status abc", code: 2, stderr: "--status", stderrLine: true},
		{args: "dlq list --since yesterday", code: 2, stderr: `--since: "yesterday"`, stderrLine: true},
		{args: "version --json extra", code: 2, stderr: "unexpected argument extra", stderrLine: true},
		{args: "config check", code: 2, stderr: "<file>", stderrLine: true},
		{args: "completion tcsh", code: 2, stderr: "tcsh", stderrLine: true},
		{args: "kenar subscribe --config x.yaml", code: 2, stderr: "--event-type", stderrLine: true},
		{args: "emulator --nope", code: 2, stderr: "-nope"},
		{args: "emulator stray", code: 2, stderr: `unexpected argument "stray"`, stderrLine: true},
		{args: "run", code: 1, stderr: "sinks: none configured", stderrLine: true},
		{args: "config check does-not-exist.yaml", code: 1, stderr: "does-not-exist.yaml", stderrLine: true},
		{args: "health --addr 127.0.0.1:1", code: 1, stderr: "not reachable", stderrLine: true},
		{args: "dlq stats --server nats://127.0.0.1:1", code: 1, stderr: "connect to NATS", stderrLine: true},
	} {
		t.Run(tc.args, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := mainCode(context.Background(), strings.Fields(tc.args), strings.NewReader(""), &out, &errOut)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout: %s\nstderr: %s", code, tc.code, out.String(), errOut.String())
			}
			check := func(stream, got, want string) {
				switch {
				case want == "" && got != "":
					t.Errorf("%s should be empty, got:\n%s", stream, got)
				case !strings.Contains(got, want):
					t.Errorf("%s lacks %q:\n%s", stream, want, got)
				}
			}
			check("stdout", out.String(), tc.stdout)
			check("stderr", errOut.String(), tc.stderr)
			if tc.stderrLine && strings.Count(errOut.String(), "\n") != 1 {
				t.Errorf("stderr is not one line:\n%s", errOut.String())
			}
		})
	}
}

func TestVersionJSON(t *testing.T) {
	var out bytes.Buffer
	if err := runCommand(context.Background(), []string{"version", "--json"}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var v struct {
		Version   string `json:"version"`
		GoVersion string `json:"go_version"`
	}
	if err := json.Unmarshal(out.Bytes(), &v); err != nil || v.Version == "" || v.GoVersion == "" {
		t.Fatalf("version --json: %v\n%s", err, out.String())
	}
}

// Completion: the shell runs the binary with COMP_LINE set.
func TestCompletion(t *testing.T) {
	t.Setenv("COMP_LINE", "dispatcher dlq list --s")
	var out bytes.Buffer
	if code := mainCode(context.Background(), []string{"dispatcher"}, nil, &out, io.Discard); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"--sink", "--since", "--server"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("completions lack %s:\n%s", want, out.String())
		}
	}
}

// Every command, found in the parser's model so a new one cannot be
// missed, prints its help on stdout with exit 0, both as COMMAND --help
// and as help COMMAND.
func TestEveryCommandsHelp(t *testing.T) {
	var c cli
	parser, err := newParser(&c, &streams{stdout: io.Discard, stderr: io.Discard}, context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var paths [][]string
	var visit func(n *kong.Node, path []string)
	visit = func(n *kong.Node, path []string) {
		if n.Type == kong.CommandNode && !n.Hidden {
			path = append(path[:len(path):len(path)], n.Name)
			paths = append(paths, path)
		}
		for _, child := range n.Children {
			visit(child, path)
		}
	}
	visit(parser.Model.Node, nil)
	if len(paths) < 15 {
		t.Fatalf("found only %d commands: %v", len(paths), paths)
	}
	for _, path := range paths {
		for _, args := range [][]string{append(slices.Clone(path), "--help"), append([]string{"help"}, path...)} {
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				var out, errOut bytes.Buffer
				if code := mainCode(context.Background(), args, strings.NewReader(""), &out, &errOut); code != 0 || errOut.Len() != 0 {
					t.Errorf("exit %d, stderr:\n%s", code, errOut.String())
				}
				// kong's usage line names the command; the emulator's own
				// flag set lists its flags.
				if want := strings.Join(path, " "); !strings.Contains(out.String(), want) && !strings.Contains(out.String(), "-chabok") {
					t.Errorf("stdout does not show %q:\n%s", want, out.String())
				}
			})
		}
	}
}
