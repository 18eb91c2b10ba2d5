package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// Issue 21: `dispatcher sinks pause` and `resume`: the running dispatcher
// obeys within seconds, the output names it, a name no config or
// dispatcher knows is recorded all the same with the known sinks named,
// and --json says the state.
func TestSinksPauseResume(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	chabok := e.Sink("chabok", emulator.Chabok, nil, nil)
	d := e.Start([]config.Sink{chabok}, []config.Route{{Sinks: []string{"chabok"}}})
	url := e.Server.ClientURL()
	cli := func(args ...string) (string, string) {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := runCommand(ctx, append(args, "--nats-url", url), &out, &errOut); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut.String())
		}
		return out.String(), errOut.String()
	}

	out, errOut := cli("sinks", "pause", "chabok")
	t.Logf("sinks pause chabok:\n%s", out)
	// The pause's reach: what happens past it, and how to replay.
	reach := fmt.Sprintf("a pause reaches %s (nine tenths of streams.max_age, %s)", shortDuration(e.Streams.MaxAge/10*9), shortDuration(e.Streams.MaxAge))
	for _, want := range []string{"sink chabok paused", "1 dispatcher runs it", fmt.Sprintf("pid %d", os.Getpid()),
		reach, "dead-lettered paused_past_max_age, not lost", "  dispatcher dlq replay --sink chabok --reason paused_past_max_age\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("sinks pause chabok: no %q in\n%s", want, out)
		}
	}
	if errOut != "" {
		t.Errorf("sinks pause chabok: stderr %q", errOut)
	}
	testenv.Eventually(t, 5*time.Second, "the dispatcher paused", func() bool { return d.Tally.Paused("chabok") })
	if out, _ := cli("sinks", "pause", "chabok"); !strings.Contains(out, "already paused") {
		t.Errorf("pausing twice: %s", out)
	}

	// An unknown name: recorded (it may be a sink not rolled out yet), and
	// the known ones named.
	out, errOut = cli("sinks", "pause", "chabk")
	t.Logf("sinks pause chabk:\n%s%s", out, errOut)
	if !strings.Contains(out, "no dispatcher runs sink chabk") || !strings.Contains(errOut, `no sink "chabk"`) || !strings.Contains(errOut, "known sinks: chabok") {
		t.Errorf("sinks pause chabk:\n%s\n%s", out, errOut)
	}
	pauses, err := e.Topo.OperatorPauses(ctx, e.JS)
	if err != nil {
		t.Fatal(err)
	}
	if !pauses["chabk"].Paused || !pauses["chabok"].Paused {
		t.Errorf("recorded pauses: %+v", pauses)
	}

	out, _ = cli("sinks", "resume", "chabok", "--json")
	t.Logf("sinks resume chabok --json:\n%s", out)
	var r struct {
		Sink   string `json:"sink"`
		Paused bool   `json:"paused"`
		Was    bool   `json:"was_paused"`
		RunBy  []struct {
			PID int `json:"pid"`
		} `json:"run_by"`
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if r.Sink != "chabok" || r.Paused || !r.Was || len(r.RunBy) != 1 || r.RunBy[0].PID != os.Getpid() {
		t.Errorf("sinks resume --json: %s", out)
	}
	testenv.Eventually(t, 5*time.Second, "the dispatcher resumed", func() bool { return !d.Tally.Paused("chabok") })
	if out, _ := cli("sinks", "resume", "chabok"); !strings.Contains(out, "was not paused") {
		t.Errorf("resuming twice: %s", out)
	}
}

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		7 * 24 * time.Hour:             "168h",
		151*time.Hour + 12*time.Minute: "151h12m",
		54 * time.Minute:               "54m",
		7200 * time.Millisecond:        "7s",
		90 * time.Second:               "1m30s",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
