// Package publish_test runs README's publishing programs (Go, Python,
// JavaScript, the nats CLI) against an embedded JetStream with Chapar's
// streams, and checks README shows each program as it is in this folder.
package publish_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// programs are the files README shows, with the language of its fence.
var programs = []struct{ file, lang string }{
	{"go/main.go", "go"},
	{"python/publish.py", "python"},
	{"js/publish.mjs", "js"},
	{"nats-cli.sh", "sh"},
}

// README shows each program whole, exactly as the file the test runs.
func TestReadmeShowsEachProgramAsItIs(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range programs {
		src, err := os.ReadFile(p.file)
		if err != nil {
			t.Fatal(err)
		}
		block := "```" + p.lang + "\n" + string(src) + "```\n"
		if !bytes.Contains(readme, []byte(block)) {
			t.Errorf("README.md does not show examples/publish/%s as it is (a ```%s block with the file's text): update one from the other", p.file, p.lang)
		}
	}
}

var published = regexp.MustCompile(`(?m)^published (\S+)`)

// Each program publishes one track event; it must arrive in the events
// stream as a valid envelope with the id the program printed, as its
// JetStream message id, with type and subject as written.
func TestProgramsPublishAValidEnvelope(t *testing.T) {
	e := testenv.New(t)
	url := e.Server.ClientURL()
	for _, tc := range []struct {
		name string
		// cmd is the program's command, or a reason to skip.
		cmd func(t *testing.T, ctx context.Context) *exec.Cmd
	}{
		{"go", func(t *testing.T, ctx context.Context) *exec.Cmd {
			return exec.CommandContext(ctx, "go", "run", "./go")
		}},
		{"python", func(t *testing.T, ctx context.Context) *exec.Cmd {
			python := lookPath(t, "python3", "Python 3")
			// Without nats-py the program cannot run, but it must compile.
			// (compile, not py_compile: nothing is written into the tree)
			check := "import sys; compile(open(sys.argv[1]).read(), sys.argv[1], 'exec')"
			if out, err := exec.CommandContext(ctx, python, "-c", check, "python/publish.py").CombinedOutput(); err != nil {
				t.Fatalf("python/publish.py does not compile: %v\n%s", err, out)
			}
			if exec.CommandContext(ctx, python, "-c", "import nats.js").Run() != nil {
				t.Skip("skipped: the Python client nats-py is not installed (it comes only from PyPI, which this machine " +
					"cannot reach, and Debian does not package it); pip install nats-py to run this test")
			}
			return exec.CommandContext(ctx, python, "python/publish.py")
		}},
		{"js", func(t *testing.T, ctx context.Context) *exec.Cmd {
			node, npm := lookPath(t, "node", "Node.js"), lookPath(t, "npm", "npm")
			// Install the locked client into a copy, not into the source tree.
			dir := t.TempDir()
			for _, f := range []string{"package.json", "package-lock.json", "publish.mjs"} {
				raw, err := os.ReadFile(filepath.Join("js", f))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, f), raw, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			install := exec.CommandContext(ctx, npm, "ci", "--no-audit", "--no-fund", "--loglevel=error")
			install.Dir = dir
			if out, err := install.CombinedOutput(); err != nil {
				t.Fatalf("npm ci: %v\n%s", err, out)
			}
			cmd := exec.CommandContext(ctx, node, "publish.mjs")
			cmd.Dir = dir
			return cmd
		}},
		{"nats-cli", func(t *testing.T, ctx context.Context) *exec.Cmd {
			lookPath(t, "nats", "the nats CLI (go install github.com/nats-io/natscli/nats@v0.5.0; .ci/run installs it)")
			cmd := exec.CommandContext(ctx, "bash", "nats-cli.sh")
			// No natscli context of this machine's user may pick the server.
			home := t.TempDir()
			cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+home, "NATS_CONTEXT=")
			return cmd
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			cmd := tc.cmd(t, ctx)
			// The events stream keeps a message while a consumer has an
			// interest in it: subscribe before the program publishes.
			cons, err := e.JS.CreateOrUpdateConsumer(ctx, e.Topo.EventsStream(), jetstream.ConsumerConfig{
				Durable: "examples-" + tc.name, FilterSubject: e.Topo.EventSubject(envelope.TypeTrack),
				DeliverPolicy: jetstream.DeliverNewPolicy, AckPolicy: jetstream.AckExplicitPolicy,
			})
			if err != nil {
				t.Fatal(err)
			}
			if cmd.Env == nil {
				cmd.Env = os.Environ()
			}
			cmd.Env = append(cmd.Env, "NATS_URL="+url)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%s: %v\nstdout: %s\nstderr: %s", cmd, err, stdout.String(), stderr.String())
			}
			m := published.FindStringSubmatch(stdout.String())
			if m == nil {
				t.Fatalf("the program did not print `published <id>`:\n%s", stdout.String())
			}
			checkArrived(t, e, cons, m[1])
		})
	}
}

// checkArrived takes the one track event the consumer got since the
// program started and checks it is the program's.
func checkArrived(t *testing.T, e *testenv.Env, cons jetstream.Consumer, id string) {
	t.Helper()
	batch, err := cons.Fetch(1, jetstream.FetchMaxWait(10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msg jetstream.Msg
	for m := range batch.Messages() {
		msg = m
	}
	if err := batch.Error(); err != nil || msg == nil {
		t.Fatalf("no track event arrived in %s: %v", e.Topo.EventsStream(), err)
	}
	// One event, not more: nothing else is waiting.
	if more, err := cons.FetchNoWait(1); err == nil {
		for m := range more.Messages() {
			t.Errorf("a second event arrived: %s", m.Data())
		}
	}
	if got := msg.Headers().Get("Nats-Msg-Id"); got != id {
		t.Errorf("Nats-Msg-Id %q, want the envelope id %q (JetStream de-duplicates on it)", got, id)
	}
	ev, err := envelope.Parse(msg.Data(), e.Topo.MaxEnvelopeBytes())
	if err != nil {
		t.Fatalf("not a valid envelope: %v\n%s", err, msg.Data())
	}
	if ev.ID != id || ev.Type != envelope.TypeTrack || ev.Subject != "user-42" || ev.Name() != "order_paid" ||
		ev.EventUser().MetrixSessionID != "sess-77" {
		t.Errorf("envelope id %q type %q subject %q name %q user %+v; want %q chapar.track user-42 order_paid",
			ev.ID, ev.Type, ev.Subject, ev.Name(), ev.EventUser(), id)
	}
}

func lookPath(t *testing.T, name, what string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("skipped: %s is not installed (%s not in PATH)", what, name)
	}
	return p
}
