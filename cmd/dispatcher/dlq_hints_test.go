package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/app"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// writeDeadLetters stores n dead letters of a sink, event ids prefix-0….
func writeDeadLetters(t *testing.T, e *testenv.Env, sink, prefix string, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := dlq.NewWriter(e.JS, e.Topo)
	for i := range n {
		r := &dlq.Record{Sink: sink, Reason: outcome.VendorRejected, Status: 400, Attempts: 1,
			EventID: fmt.Sprintf("%s-%d", prefix, i), EventType: "chapar.track", LastAttempt: time.Now()}
		if sink == dlq.NoSink {
			r.Reason, r.Status = outcome.InvalidEnvelope, 0
		}
		if _, err := w.Write(ctx, r); err != nil {
			t.Fatal(err)
		}
	}
}

// What the dlq commands say beyond the rows: that a list stopped at its
// limit with more to come (and how to see them), that a --sink no sink
// has is not configured (naming those that are, and those with dead
// letters), and that a filter's sink is a sink name, never a wildcard.
func TestDLQCommandsSayWhatTheyLeftOut(t *testing.T) {
	e := testenv.New(t)
	writeDeadLetters(t, e, "metrix-gateway", "g", 129)
	writeDeadLetters(t, e, dlq.NoSink, "junk", 1)
	url := e.Server.ClientURL()
	run := func(args ...string) (string, string, error) {
		var out, errOut bytes.Buffer
		err := runCommand(context.Background(), append(args, "--nats-url", url), &out, &errOut)
		return out.String(), errOut.String(), err
	}
	local := []string{"--config", "../../configs/local.yaml"}
	configured := "local.yaml configures: chabok, metrix-s2s, metrix-gateway, kenar, webhook"
	withDeadLetters := "sinks with dead letters: - (1), metrix-gateway (129)"
	for _, c := range []struct {
		name       string
		args       []string
		rows       int      // table rows on stdout (-1: not a table)
		stdout     []string // each on stdout
		stderr     []string // each on stderr
		noStderr   bool
		usageError string
	}{
		{name: "a list cut at its limit says so, and how to page", args: []string{"dlq", "list"}, rows: 100,
			stderr: []string{"showed the first 100; more match: the next page is --after 100, all of them --limit 0"}},
		{name: "the next page from there", args: []string{"dlq", "list", "--after", "100"}, rows: 30, noStderr: true},
		{name: "all of them", args: []string{"dlq", "list", "--limit", "0"}, rows: 130, noStderr: true},
		{name: "a list exactly at its limit has no more", args: []string{"dlq", "list", "--limit", "130"}, rows: 130, noStderr: true},
		{name: "JSON lines have no footer", args: []string{"dlq", "list", "--json"}, rows: -1, noStderr: true},
		{name: "list of a sink not configured", args: append([]string{"dlq", "list", "--sink", "metrix"}, local...), rows: -1,
			stdout: []string{"no dead letters"}, stderr: []string{`no sink "metrix" is configured; `, configured, withDeadLetters}},
		{name: "stats of a sink not configured", args: append([]string{"dlq", "stats", "--sink", "metrix"}, local...), rows: -1,
			stdout: []string{"0 dead letters"}, stderr: []string{`no sink "metrix" is configured`, withDeadLetters}},
		{name: "dry run of a sink not configured", args: append([]string{"dlq", "replay", "--sink", "metrix", "--dry-run"}, local...), rows: -1,
			stdout: []string{"dry run: 0 dead letters match"}, stderr: []string{configured, withDeadLetters}},
		{name: "purge of a sink not configured", args: append([]string{"dlq", "purge", "--sink", "metrix"}, local...), rows: -1,
			stdout: []string{"no dead letters match; nothing purged"}, stderr: []string{configured, withDeadLetters}},
		{name: "without --config none are known", args: []string{"dlq", "list", "--sink", "metrix"}, rows: -1,
			stderr: []string{`no sink "metrix" is configured (no --config given, so none are known here)`, withDeadLetters}},
		{name: "a configured sink with none is no mistake", args: append([]string{"dlq", "list", "--sink", "chabok"}, local...), rows: -1,
			stdout: []string{"no dead letters"}, noStderr: true},
		{name: "the README's example", args: append([]string{"dlq", "list", "--sink", "metrix-gateway", "--code", "EVENT_TYPE_DOES_NOT_EXIST"}, local...), rows: -1,
			stdout: []string{"no dead letters"}, noStderr: true},
		{name: "* is no wildcard", args: []string{"dlq", "list", "--sink", "*"}, usageError: `--sink: "*" is not a sink name`},
		{name: "> is no wildcard", args: []string{"dlq", "stats", "--sink", ">"}, usageError: `--sink: ">" is not a sink name`},
		{name: "nor a subject's tail", args: []string{"dlq", "purge", "--sink", "metrix-gateway.>", "--yes"}, usageError: "is not a sink name"},
		{name: "markup is no sink", args: []string{"dlq", "replay", "--sink", "<script>", "--dry-run"}, usageError: "is not a sink name"},
	} {
		t.Run(c.name, func(t *testing.T) {
			out, errOut, err := run(c.args...)
			if c.usageError != "" {
				var ue usageError
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), c.usageError) {
					t.Fatalf("want a usage error %q, got %v", c.usageError, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("%v\n%s", err, errOut)
			}
			if c.rows >= 0 {
				if got := strings.Count(out, "\n") - 1; got != c.rows {
					t.Errorf("%d rows, want %d:\n%s", got, c.rows, out)
				}
			}
			for _, want := range c.stdout {
				if !strings.Contains(out, want) {
					t.Errorf("stdout lacks %q:\n%s", want, out)
				}
			}
			for _, want := range c.stderr {
				if !strings.Contains(errOut, want) {
					t.Errorf("stderr lacks %q:\n%s", want, errOut)
				}
			}
			if c.noStderr && errOut != "" {
				t.Errorf("stderr: %s", errOut)
			}
		})
	}
}

// README's dead-letter examples filter on sinks configs/local.yaml (the
// config README runs) has:
// one it lacks matched nothing, and said only "no dead letters".
func TestREADMEFiltersOnConfiguredSinks(t *testing.T) {
	cfg, err := app.LoadConfig(app.ConfigSource{File: "../../configs/local.yaml", LookupEnv: os.LookupEnv})
	if err != nil {
		t.Fatal(err)
	}
	configured := map[string]bool{}
	for _, s := range cfg.Sinks {
		configured[s.Name] = true
	}
	for _, doc := range []string{"../../README.md"} {
		for _, m := range regexp.MustCompile(`dlq [a-z]+ [^\n]*?--sink ([a-z0-9_-]+)`).FindAllStringSubmatch(readFile(t, doc), -1) {
			if !configured[m[1]] {
				t.Errorf("%s: %q filters on sink %q, which configs/local.yaml does not configure", doc, m[0], m[1])
			}
		}
	}
}

// answerAfter answers the purge's question, having first done what
// happens meanwhile (another command's purge, a new dead letter).
type answerAfter struct {
	meanwhile func()
	answer    io.Reader
}

func (a *answerAfter) Read(p []byte) (int, error) {
	if a.meanwhile != nil {
		a.meanwhile()
		a.meanwhile = nil
	}
	return a.answer.Read(p)
}

// A purge purges no more than the count it asked about: a dead letter
// written while the question waits is kept, and one removed meanwhile is
// said to be.
func TestPurgeDoesWhatItAsked(t *testing.T) {
	e := testenv.New(t)
	writeDeadLetters(t, e, "chabok", "c", 2)
	st := dlq.NewStore(e.JS, e.Topo)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stdin := &answerAfter{answer: strings.NewReader("y\n"), meanwhile: func() {
		if n, err := st.Purge(ctx, dlq.Filter{EventID: "c-0"}); err != nil || n != 1 {
			t.Errorf("purge of c-0 meanwhile: %d, %v", n, err)
		}
		writeDeadLetters(t, e, "chabok", "late", 1)
	}}
	var out, errOut bytes.Buffer
	if err := runCommandIO(ctx, []string{"dlq", "purge", "--sink", "chabok", "--nats-url", e.Server.ClientURL()}, stdin, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, errOut.String())
	}
	for _, want := range []string{"purge 2 dead letters for good?", "purged 1 dead letters; the other 1 were replayed or purged meanwhile"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, out.String())
		}
	}
	left, err := st.List(ctx, dlq.Filter{}, 0)
	if err != nil || len(left) != 1 || left[0].EventID != "late-0" {
		t.Errorf("left after the purge: %d records (%v), want late-0 alone", len(left), err)
	}
}

// Against a NATS without the dead-letter stream (or the events stream),
// replay, purge and redeliver fail with the stream named, and print no
// count: "replayed 0 of 0" before the error read as if the stream had been
// searched.
func TestDLQReplayAndPurgeOfAMissingStreamPrintNoCount(t *testing.T) {
	e := testenv.New(t)
	for _, s := range []string{e.Topo.DeadLetterStream(), e.Topo.EventsStream()} {
		if err := e.JS.DeleteStream(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	url := e.Server.ClientURL()
	for _, c := range []struct {
		args []string
		want string // in the error
	}{
		{[]string{"dlq", "replay"}, e.Topo.DeadLetterStream()},
		{[]string{"dlq", "replay", "--dry-run"}, e.Topo.DeadLetterStream()},
		{[]string{"dlq", "purge", "--yes"}, e.Topo.DeadLetterStream()},
		{[]string{"sinks", "redeliver", "--sink", "chabok", "--since", "1h"}, "no dispatcher has run sink chabok"},
		{[]string{"sinks", "redeliver", "--sink", "chabok", "--since", "1h", "--dry-run"}, e.Topo.EventsStream()},
	} {
		args := c.args
		var out, errOut bytes.Buffer
		err := runCommand(context.Background(), append(args, "--config", "../../configs/local.yaml", "--nats-url", url), &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: error %v, want one saying %q", args, err, c.want)
		}
		if out.Len() > 0 {
			t.Errorf("%v printed %q before failing, want nothing on stdout", args, out.String())
		}
	}
}
