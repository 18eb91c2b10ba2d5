package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

var attemptRow = regexp.MustCompile(`(?m)^  1 +first delivery +\d{4}-\d\d-\d\dT\S+Z +404 +EVENT_TYPE_DOES_NOT_EXIST +\d+ms +\S`)

func TestDLQCommands(t *testing.T) {
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 404, Code: "EVENT_TYPE_DOES_NOT_EXIST", Count: 3})
	d := e.Start([]config.Sink{e.Sink("gateway", emulator.MetrixGateway, map[string]string{"order_paid": "aewqd"}, nil)},
		[]config.Route{{Sinks: []string{"gateway"}}})
	var ids []string
	for _, u := range []string{"u1", "u2", "u3"} {
		env := testenv.Track(t, "order_paid", u)
		ids = append(ids, env.ID)
		e.Publish(env)
	}
	e.PublishRaw(e.Topo.EventSubject("chapar.track"), "junk", []byte("junk"))
	url := e.Server.ClientURL()
	cli := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := runCommand(context.Background(), append(args, "--nats-url", url), &out, &errOut); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut.String())
		}
		return out.String()
	}
	testenv.Eventually(t, 10*time.Second, "four dead letters", func() bool {
		return strings.Contains(cli("dlq", "stats"), "4 dead letters")
	})
	var stats struct {
		Total  int            `json:"total"`
		BySink map[string]int `json:"by_sink"`
	}
	if err := json.Unmarshal([]byte(cli("dlq", "stats", "--json")), &stats); err != nil || stats.Total != 4 || stats.BySink["gateway"] != 3 {
		t.Errorf("stats --json: %v %+v", err, stats)
	}
	for i, line := range strings.Split(strings.TrimSpace(cli("dlq", "list", "--json", "--limit", "0")), "\n") {
		var r struct{ Seq uint64 }
		if err := json.Unmarshal([]byte(line), &r); err != nil || r.Seq == 0 {
			t.Errorf("list --json line %d: %v %q", i, err, line)
		}
	}
	var shown struct {
		EventID    string          `json:"event_id"`
		Reason     string          `json:"reason"`
		Envelope   json.RawMessage `json:"envelope"`
		AttemptLog dlq.AttemptLog  `json:"attempt_log"`
	}
	if err := json.Unmarshal([]byte(cli("dlq", "show", ids[0], "--json")), &shown); err != nil ||
		shown.EventID != ids[0] || shown.Reason != "vendor_rejected" || !strings.Contains(string(shown.Envelope), ids[0]) {
		t.Errorf("show --json: %v %+v %s", err, shown, shown.Envelope)
	}
	if l := shown.AttemptLog; l.Total != 1 || len(l.Attempts) != 1 || l.Attempts[0].Status != 404 || l.Attempts[0].Code != "EVENT_TYPE_DOES_NOT_EXIST" || l.Attempts[0].At.IsZero() {
		t.Errorf("show --json attempt_log: %+v", l)
	}
	// $NATS_URL is the default server, as for natscli.
	t.Setenv("NATS_URL", url)
	var out0 bytes.Buffer
	if err := runCommand(context.Background(), []string{"dlq", "stats"}, &out0, io.Discard); err != nil || !strings.Contains(out0.String(), "4 dead letters") {
		t.Errorf("dlq stats with NATS_URL: %v %s", err, out0.String())
	}
	list := cli("dlq", "list", "--sink", "gateway")
	if strings.Count(list, "\n") != 4 || strings.Contains(list, "invalid_envelope") {
		t.Errorf("list --sink gateway:\n%s", list)
	}
	// The router's dead letter (the junk) and the sink's are written
	// concurrently, so which sequence each got varies: show one the list
	// says is the sink's.
	lines := strings.Split(list, "\n")
	if len(lines) < 2 || len(strings.Fields(lines[1])) == 0 {
		t.Fatalf("list --sink gateway has no records:\n%s", list)
	}
	seq := strings.Fields(lines[1])[0]
	// --type keeps the three track events, not the junk (no type); --after
	// is the next page from a sequence on.
	if got := cli("dlq", "list", "--type", "chapar.track", "--limit", "0"); strings.Count(got, "\n") != 4 || strings.Contains(got, "invalid_envelope") {
		t.Errorf("list --type chapar.track:\n%s", got)
	}
	if got := cli("dlq", "list", "--type", "chapar.purchase"); !strings.Contains(got, "no dead letters") {
		t.Errorf("list --type chapar.purchase:\n%s", got)
	}
	if got := cli("dlq", "list", "--after", seq, "--limit", "0"); strings.Contains(got, "\n"+seq+" ") || strings.Count(got, "\n") >= 5 {
		t.Errorf("list --after %s still lists it, or lists all four:\n%s", seq, got)
	}
	show := cli("dlq", "show", seq)
	if !strings.Contains(show, `"reason": "vendor_rejected"`) || !strings.Contains(show, `"name": "order_paid"`) {
		t.Errorf("show:\n%s", show)
	}
	// The attempt log is a table, not JSON.
	if !attemptRow.MatchString(show) || !strings.Contains(show, "attempts (1 in all):") || strings.Contains(show, `"attempt_log"`) {
		t.Errorf("show lacks the attempt table:\n%s", show)
	}
	byID := cli("dlq", "show", ids[1])
	if strings.Count(byID, `"event_id": "`+ids[1]+`"`) != 1 || !strings.Contains(byID, "original envelope") {
		t.Errorf("show by event id:\n%s", byID)
	}
	if dry := cli("dlq", "replay", "--code", "EVENT_TYPE_DOES_NOT_EXIST", "--dry-run"); !strings.Contains(dry, "dry run: 3 dead letters match") {
		t.Errorf("dry run:\n%s", dry)
	}
	if got := cli("dlq", "replay", "--sink", "gateway", "--rate", "50"); !strings.Contains(got, "replayed 3 of 3") {
		t.Errorf("replay:\n%s", got)
	}
	testenv.Eventually(t, 10*time.Second, "replays delivered", func() bool { return d.Tally.DeliveredTo("gateway") == 3 })
	if got := cli("dlq", "purge", "--reason", "invalid_envelope", "--yes"); !strings.Contains(got, "purged 1 dead letters") {
		t.Errorf("purge:\n%s", got)
	}
	if got := cli("dlq", "stats"); !strings.Contains(got, "0 dead letters") {
		t.Errorf("after replay and purge:\n%s", got)
	}
	var out, errOut bytes.Buffer
	err := runCommand(context.Background(), []string{"dlq", "show", "999", "--nats-url", url}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "entry 999: no such dead letter") || strings.Contains(err.Error(), "API error") {
		t.Errorf("show of a missing entry: %v", err)
	}
}
