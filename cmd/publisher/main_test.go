package main

import (
	"bytes"
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

func TestPublishesFileAndReportsFailures(t *testing.T) {
	e := testenv.New(t)
	// A sink's consumer, as a dispatcher makes: the events stream keeps
	// what some sink has yet to take.
	if _, err := e.Topo.EnsureSink(context.Background(), e.JS, "probe", topology.ConsumerSettings{AckWait: time.Minute, MaxAckPending: 10}); err != nil {
		t.Fatal(err)
	}
	url := e.Server.ClientURL()
	input := `{"specversion":"1.0","id":"p-1","source":"t","type":"chapar.track","data":{"name":"a","user":{"id":"u"}}}
{"specversion":"1.0","id":"p-2","source":"t","type":"chapar.track","data":{"user":{"id":"u"}}}
{
  "specversion": "1.0", "id": "p-3", "source": "t", "type": "chapar.purchase",
  "data": {"name": "buy", "revenue": 10, "currency": "USD", "user": {"id": "u"}}
}
{"specversion":"1.0","id":"p-1","source":"t","type":"chapar.track","data":{"name":"a","user":{"id":"u"}}}
`
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"--nats-url", url, "--file", "-"}, strings.NewReader(input), &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "1 of 4 envelopes were not published") {
		t.Fatalf("want one failure reported, got %v\n%s", err, out.String())
	}
	if !strings.Contains(errOut.String(), "envelope 2: invalid envelope: data.name is required") {
		t.Errorf("stderr does not name the bad envelope: %s", errOut.String())
	}
	if !strings.Contains(out.String(), "(duplicate: already stored)") {
		t.Errorf("a republished id is not reported as a duplicate: %s", out.String())
	}
	s, _ := e.JS.Stream(context.Background(), e.Topo.EventsStream())
	info, _ := s.Info(context.Background())
	if info.State.Msgs != 2 {
		t.Errorf("stream holds %d events, want 2", info.State.Msgs)
	}

	out.Reset()
	err = run(context.Background(), []string{"--nats-url", url, "--type", "chapar.purchase", "--name", "buy", "--user-id", "u9",
		"--revenue", "1500", "--prop", "coupon=NOWRUZ", "--prop", "qty=2"}, nil, &out, &errOut)
	if err != nil || !strings.Contains(out.String(), "published chapar.purchase") {
		t.Fatalf("flags: %v %s", err, out.String())
	}
	err = run(context.Background(), []string{"--nats-url", url, "--type", "chapar.track"}, nil, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "data.name is required") {
		t.Errorf("a track without a name: %v", err)
	}
}

// With --partitions, each event goes to its key's partition stream: the
// subject (the user) chooses it, as envelope.Partition says.
func TestPublishesToTheKeysPartition(t *testing.T) {
	e := testenv.NewPartitioned(t, 3)
	if _, err := e.Topo.EnsureSink(context.Background(), e.JS, "probe", topology.ConsumerSettings{AckWait: time.Minute, MaxAckPending: 10}); err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"user-42", "user-43", "u7"} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), []string{"--nats-url", e.Server.ClientURL(), "--partitions", "3",
			"--name", "a", "--user-id", user}, nil, &out, &errOut)
		if err != nil {
			t.Fatalf("%s: %v %s", user, err, errOut.String())
		}
		want := e.Topo.EventsStreamOf(envelope.Partition(user, 3))
		if !strings.Contains(out.String(), " as "+want+" #") {
			t.Errorf("%s: %q, want it stored in %s", user, out.String(), want)
		}
	}
}

func TestExitCodesAndStreams(t *testing.T) {
	t.Setenv("NATS_URL", "")
	for _, tc := range []struct {
		args           string
		code           int
		stdout, stderr string
	}{
		{"--help", 0, "Usage: publisher [flags]", ""},
		{"--version", 0, "chapar publisher ", ""},
		{"--bogus", 2, "", "unknown flag --bogus"},
		{"stray", 2, "", "unexpected argument stray"},
		{"--timeout", 2, "", "--timeout"},
		{"--timeout soon", 2, "", "--timeout"},
		{"--prop novalue", 2, "", `--prop: want key=value, got "novalue"`},
		{"--partitions 0", 2, "", "--partitions: is 0; use streams.partitions"},
		{"--name x --server nats://127.0.0.1:1", 1, "", "connect to nats://127.0.0.1:1"},
		// The flags that build one event do not apply to a file's envelopes:
		// refused, not silently ignored (the server is never reached).
		{"--file - --destinations x --server nats://127.0.0.1:1", 2, "", "--destinations: builds the event from flags; with --file"},
		{"--file events.ndjson --name a --user-id u --server nats://127.0.0.1:1", 2, "", "--name, --user-id: build the event from flags; with --file"},
		{"--file - --prop a=1 --id x --revenue 1 --server nats://127.0.0.1:1", 2, "", "--revenue, --id, --prop: build the event from flags"},
	} {
		t.Run(tc.args, func(t *testing.T) {
			var out, errOut bytes.Buffer
			code := mainCode(context.Background(), strings.Fields(tc.args), strings.NewReader(""), &out, &errOut)
			if code != tc.code {
				t.Errorf("exit %d, want %d (stderr %s)", code, tc.code, errOut.String())
			}
			if tc.stdout == "" && out.Len() > 0 || !strings.Contains(out.String(), tc.stdout) {
				t.Errorf("stdout %q, want %q", out.String(), tc.stdout)
			}
			if tc.stderr == "" && errOut.Len() > 0 || !strings.Contains(errOut.String(), tc.stderr) {
				t.Errorf("stderr %q, want %q", errOut.String(), tc.stderr)
			}
			if tc.stderr != "" && strings.Count(errOut.String(), "\n") != 1 {
				t.Errorf("stderr is not one line: %q", errOut.String())
			}
		})
	}
}

// docs/cli.md's connection flags, which it says the publisher takes too,
// are flags the publisher has, or the section says which it has not
// (before: --context was listed and unknown to it).
func TestCLIDocConnectionFlagsAreThePublishers(t *testing.T) {
	raw, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	start := strings.Index(doc, "## Connecting to NATS")
	if start < 0 {
		t.Fatal("docs/cli.md has no Connecting to NATS section")
	}
	section := doc[start:]
	if end := strings.Index(section[1:], "\n## "); end >= 0 {
		section = section[:end+1]
	}
	intro, _, _ := strings.Cut(section, "\n|")
	intro = strings.Join(strings.Fields(intro), " ")
	for _, m := range regexp.MustCompile("(?m)^\\| `(--[a-z-]+)").FindAllStringSubmatch(section, -1) {
		flag := m[1]
		if strings.Contains(intro, "no `"+flag+"`") {
			continue // the doc says the publisher has not this one
		}
		var out, errOut bytes.Buffer
		code := mainCode(context.Background(), []string{flag, "x", "--help"}, strings.NewReader(""), &out, &errOut)
		if code != 0 || strings.Contains(errOut.String(), "unknown flag") {
			t.Errorf("docs/cli.md says the publisher takes %s: exit %d %s", flag, code, errOut.String())
		}
	}
}
