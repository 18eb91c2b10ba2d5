package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/lookup"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Issue 21, lookup: `dispatcher events show ID` says, for each sink of the
// config, what became of the event: delivered (when, attempts, latency),
// waiting behind a pause, or not routed and why; an id never published is
// an error that says so.
func TestEventsShow(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	routes := []config.Route{
		{Types: []string{"chapar.track"}, Sinks: []string{"chabok"}},
		{Names: []string{"signup"}, Sinks: []string{"crm"}, Filter: `data.user.id != "u9"`},
	}
	chabok, crm := e.Sink("chabok", emulator.Chabok, nil, nil), e.Sink("crm", emulator.Chabok, nil, nil)
	d := e.Start([]config.Sink{chabok, crm}, routes)
	file := filepath.Join(t.TempDir(), "chapar.yaml")
	yaml := fmt.Sprintf(`sinks:
  - {name: chabok, vendor: chabok, base_url: %[1]s, settings: {app_id: demoapp, access_token: t}}
  - {name: crm, vendor: chabok, base_url: %[1]s, settings: {app_id: demoapp, access_token: t}}
routes:
  - {types: [chapar.track], sinks: [chabok]}
  - {names: [signup], sinks: [crm], filter: 'data.user.id != "u9"'}
`, e.URL[emulator.Chabok])
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := runCommand(ctx, append(args, "--config", file, "--nats-url", e.Server.ClientURL()), &out, &errOut)
		return out.String(), err
	}

	paid := testenv.Track(t, "order_paid", "u1")
	ack := e.Publish(paid)
	testenv.Eventually(t, 10*time.Second, "delivered", func() bool { return d.Tally.DeliveredTo("chabok") == 1 })
	var out string
	testenv.Eventually(t, 10*time.Second, "the delivery recorded", func() bool {
		out, _ = cli("events", "show", paid.ID)
		return strings.Contains(out, "chabok  delivered")
	})
	t.Logf("events show (delivered):\n%s", out)
	for _, want := range []string{
		"event " + paid.ID + "  type chapar.track  name order_paid",
		fmt.Sprintf("stored in %s #%d at ", ack.Stream, ack.Sequence),
		"latency ",
		`crm     not_routed`, `no route sends chapar.track events named "order_paid" to it`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}

	// A paused sink's event waits, and says behind what.
	if _, err := runCommandOut(ctx, "sinks", "pause", "crm", "--nats-url", e.Server.ClientURL()); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "crm paused", func() bool { return d.Tally.Paused("crm") })
	signup := testenv.Track(t, "signup", "u2")
	e.Publish(signup)
	testenv.Eventually(t, 10*time.Second, "the signup delivered to chabok and waiting for crm", func() bool {
		out, _ = cli("events", "show", signup.ID, "--json")
		var r lookup.Report
		if json.Unmarshal([]byte(out), &r) != nil || len(r.Sinks) != 2 {
			return false
		}
		return r.Sinks[0].State == lookup.Delivered && r.Sinks[1].State == lookup.Paused
	})
	out, _ = cli("events", "show", signup.ID)
	t.Logf("events show (paused):\n%s", out)
	if !strings.Contains(out, "crm     paused") || !strings.Contains(out, "dispatcher sinks resume crm") {
		t.Errorf("the paused sink's line:\n%s", out)
	}

	// No sink has settled it: found in the backlog all the same.
	only := testenv.Track(t, "order_paid", "u3", envelope.WithDestinations("crm"))
	onlyAck := e.Publish(only)
	out, err := cli("events", "show", only.ID)
	t.Logf("events show (in the backlog, no record):\n%s", out)
	if err != nil || !strings.Contains(out, fmt.Sprintf("#%d", onlyAck.Sequence)) || !strings.Contains(out, "crm     paused") ||
		!strings.Contains(out, "up to 1 events ahead of it") || !strings.Contains(out, "its destinations name other sinks") {
		t.Errorf("an event waiting behind the pause, with no record: %v\n%s", err, out)
	}

	// The window's deliveries, latest state first recorded first, paged.
	list := func(args ...string) (string, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := runCommand(ctx, append(append([]string{"events", "list"}, args...), "--config", file, "--nats-url", e.Server.ClientURL()), &out, &errOut); err != nil {
			t.Fatalf("events list %v: %v\n%s", args, err, errOut.String())
		}
		return out.String(), errOut.String()
	}
	out, errOut := list("--since", "10m")
	t.Logf("events list:\n%s%s", out, errOut)
	if !strings.Contains(out, paid.ID) || !strings.Contains(out, signup.ID) || strings.Contains(out, only.ID) || !strings.Contains(errOut, "2 shown; that is all") {
		t.Errorf("events list --since 10m:\n%s%s", out, errOut)
	}
	out, errOut = list("--limit", "1", "--sink", "chabok", "--state", "delivered")
	if !strings.Contains(out, paid.ID) || strings.Contains(out, signup.ID) || !strings.Contains(errOut, "more match: the next page is --after ") {
		t.Fatalf("first page:\n%s%s", out, errOut)
	}
	after := strings.TrimSpace(errOut[strings.LastIndex(errOut, " ")+1:])
	out, _ = list("--limit", "1", "--sink", "chabok", "--after", after)
	if strings.Contains(out, paid.ID) || !strings.Contains(out, signup.ID) {
		t.Errorf("second page (--after %s):\n%s", after, out)
	}
	if out, errOut = list("--subject", "nobody"); strings.Count(out, "\n") != 1 || !strings.Contains(errOut, "no delivery matches") {
		t.Errorf("no match:\n%s%s", out, errOut)
	}

	// A route's filter kept it from a sink: the lookup names the filter.
	u9 := testenv.Track(t, "signup", "u9")
	e.Publish(u9)
	testenv.Eventually(t, 10*time.Second, "u9's signup delivered to chabok", func() bool {
		out, _ = cli("events", "show", u9.ID)
		return strings.Contains(out, "chabok  delivered")
	})
	if !strings.Contains(out, "crm     not_routed") || !strings.Contains(out, "filtered out by routes[1].filter") {
		t.Errorf("an event a filter kept from crm:\n%s", out)
	}

	// Never published: an error, saying where it looked.
	if out, err := cli("events", "show", "no-such-event"); err == nil || !strings.Contains(err.Error(), "nothing recorded of it") {
		t.Errorf("an unknown id: %v\n%s", err, out)
	}
}

// runCommandOut runs the CLI with args and returns its stdout.
func runCommandOut(ctx context.Context, args ...string) (string, error) {
	var out, errOut bytes.Buffer
	err := runCommand(ctx, args, &out, &errOut)
	if err != nil {
		return out.String(), fmt.Errorf("%w: %s", err, errOut.String())
	}
	return out.String(), nil
}
