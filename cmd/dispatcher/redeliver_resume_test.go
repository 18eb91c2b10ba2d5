package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// A redelivery paced by --rate (the sink has no rate_limit: the operator
// spares the vendor's quota by hand) and cut short prints the command that
// goes on. That command must keep the pace: without --rate it re-sends the
// rest of the window as fast as JetStream confirms, the flood --rate was
// given to prevent.
func TestRedeliverResumeKeepsTheRate(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := e.Topo.EnsureSink(ctx, e.JS, "hook", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 100}); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "chapar.yaml")
	yaml := fmt.Sprintf("sinks:\n  - name: hook\n    vendor: webhook\n    base_url: %s\n    settings: { url: %s }\nroutes:\n  - sinks: [hook]\n",
		e.URL[emulator.Webhook], e.URL[emulator.Webhook]+"/hook")
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	since := time.Now()
	for i := range 3 {
		e.Publish(testenv.Track(t, "signup", fmt.Sprintf("user-%d", i)))
	}
	var out, errOut bytes.Buffer
	err := runCommand(ctx, []string{"sinks", "redeliver", "--sink", "hook", "--config", file, "--nats-url", e.Server.ClientURL(),
		"--since", since.Format(time.RFC3339Nano), "--rate", "50", "--limit", "1"}, &out, &errOut)
	if err != nil {
		t.Fatalf("%v\n%s%s", err, out.String(), errOut.String())
	}
	i := strings.Index(errOut.String(), "to go on: ")
	if i < 0 {
		t.Fatalf("no command to go on:\n%s", errOut.String())
	}
	resume := strings.TrimSpace(errOut.String()[i:])
	if !strings.Contains(resume, "--rate 50") {
		t.Errorf("the job was paced by --rate 50; the command to go on drops it, and runs unpaced:\n%s", resume)
	}
}
