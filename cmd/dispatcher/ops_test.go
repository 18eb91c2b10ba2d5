package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// dispatcher dlq replay, with ops_events.enabled in its config, reports
// the replay as a chapar.ops.replay_done event; without, it does not.
func TestDLQReplayPublishesReplayDone(t *testing.T) {
	e := testenv.New(t)
	vendor := e.Emu.Vendor(emulator.MetrixGateway)
	vendor.SetFault(emulator.Fault{Status: 404, Code: "EVENT_TYPE_DOES_NOT_EXIST", Count: 2})
	d := e.Start([]config.Sink{e.Sink("gateway", emulator.MetrixGateway, map[string]string{"order_paid": "aewqd"}, nil)},
		[]config.Route{{Sinks: []string{"gateway"}}})
	e.Publish(testenv.Track(t, "order_paid", "u1"))
	e.Publish(testenv.Track(t, "order_paid", "u2"))
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	on := write("on.yaml", "ops_events:\n  enabled: true\n")
	off := write("off.yaml", "ops_events:\n  enabled: false\n")
	cli := func(args ...string) string {
		t.Helper()
		var out, errOut bytes.Buffer
		if err := runCommand(context.Background(), append(args, "--nats-url", e.Server.ClientURL()), &out, &errOut); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut.String())
		}
		if errOut.Len() > 0 {
			t.Errorf("%v: stderr %s", args, errOut.String())
		}
		return out.String()
	}
	testenv.Eventually(t, 10*time.Second, "two dead letters", func() bool {
		return strings.Contains(cli("dlq", "stats"), "2 dead letters")
	})
	ids := cli("dlq", "list", "--json", "--limit", "0")
	var first struct {
		EventID string `json:"event_id"`
	}
	if err := json.Unmarshal([]byte(strings.SplitN(ids, "\n", 2)[0]), &first); err != nil {
		t.Fatal(err)
	}
	if got := cli("dlq", "replay", "--config", off, "--id", first.EventID); !strings.Contains(got, "replayed 1 of 1") {
		t.Fatalf("replay: %s", got)
	}
	if got := cli("dlq", "replay", "--config", on, "--sink", "gateway"); !strings.Contains(got, "replayed 1 of 1") {
		t.Fatalf("replay: %s", got)
	}
	testenv.Eventually(t, 10*time.Second, "replays delivered", func() bool { return d.Tally.DeliveredTo("gateway") == 2 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := e.JS.OrderedConsumer(ctx, e.Topo.EventsStream(), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"chapar.events.ops.>"}})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := c.Fetch(10, jetstream.FetchMaxWait(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var done []*envelope.Event
	for m := range batch.Messages() {
		ev, err := envelope.Parse(m.Data(), 0)
		if err != nil {
			t.Fatal(err)
		}
		done = append(done, ev)
	}
	if len(done) != 1 || done[0].Type != envelope.TypeOpsReplayDone || done[0].Subject != "gateway" ||
		!strings.Contains(string(done[0].Data), `"replayed":1`) || !strings.Contains(string(done[0].Data), `"by":"cli"`) {
		t.Fatalf("ops events after two replays, one with ops_events enabled: %d, %+v", len(done), done)
	}
}
