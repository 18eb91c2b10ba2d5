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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// `dispatcher sinks remove`: a dry run says what it would drop and changes
// nothing; it refuses while the config given still has the sink or a
// dispatcher still consumes it; with --yes it deletes the sink's consumers
// and waiting retries, keeps its dead letters, and the events stream keeps
// nothing for it.
func TestSinksRemove(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	chabok, gone := e.Sink("chabok", emulator.Chabok, nil, nil), e.Sink("gone", emulator.Chabok, nil, nil)
	both := e.Start([]config.Sink{chabok, gone}, []config.Route{{Sinks: []string{"chabok", "gone"}}})
	url := e.Server.ClientURL()
	cli := func(args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := runCommand(ctx, append(args, "--nats-url", url), &out, &errOut)
		return out.String(), err
	}
	// Refused, naming the replica (its presence record: this process).
	if _, err := cli("sinks", "remove", "gone", "--yes"); err == nil || !strings.Contains(err.Error(), "still consuming sink gone") ||
		!strings.Contains(err.Error(), fmt.Sprintf("pid %d", os.Getpid())) {
		t.Errorf("remove while a dispatcher runs it: %v, want a refusal naming this process", err)
	}
	if err := both.Stop(); err != nil {
		t.Fatal(err)
	}
	// The rollout without gone: its events pile up in its consumer.
	e.Start([]config.Sink{chabok}, []config.Route{{Sinks: []string{"chabok"}}})
	for _, u := range []string{"u1", "u2", "u3"} {
		e.Publish(testenv.Track(t, "order_paid", u))
	}
	// A retry waiting for an hour, and a dead letter.
	m := nats.NewMsg(e.Topo.RetryWaitSubject("gone", "1-0-1"))
	topology.Schedule(m.Header, time.Now().Add(time.Hour), e.Topo.RetryDueSubject("gone"))
	m.Data = []byte("{}")
	if _, err := e.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
	if _, err := dlq.NewWriter(e.JS, e.Topo).Write(ctx, &dlq.Record{Sink: "gone", Reason: outcome.VendorRejected, EventID: "dead-1", Origin: 99}); err != nil {
		t.Fatal(err)
	}
	fpOf := func(sink string) topology.SinkFootprint {
		f, err := e.Topo.Footprint(ctx, e.JS, sink)
		if err != nil {
			t.Fatal(err)
		}
		return f
	}
	fp := func() topology.SinkFootprint { return fpOf("gone") }
	testenv.Eventually(t, 10*time.Second, "chabok through the events", func() bool {
		c := fpOf("chabok").Consumers[0]
		return c.Pending == 0 && c.AckPending == 0
	})
	// The stopped dispatcher's pull requests end with its connection; its
	// presence record went at its clean shutdown.
	testenv.Eventually(t, 40*time.Second, "no pull requests left on gone", func() bool { return len(fp().Consuming()) == 0 })
	if running, err := e.Topo.ReplicasRunning(ctx, e.JS, "gone"); err != nil || len(running) != 0 {
		t.Errorf("presence records naming gone after its dispatcher stopped: %v %v", running, err)
	}

	file := filepath.Join(t.TempDir(), "chapar.yaml")
	if err := os.WriteFile(file, []byte(fmt.Sprintf("sinks:\n  - name: gone\n    vendor: chabok\n    base_url: %s\n    settings: {app_id: demoapp, access_token: t}\nroutes:\n  - sinks: [gone]\n", e.URL[emulator.Chabok])), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := cli("sinks", "remove", "gone", "--config", file, "--yes"); err == nil || !strings.Contains(err.Error(), "sink gone is still in") {
		t.Errorf("remove of a sink in the config given: %v, want a refusal", err)
	}

	dry, err := cli("sinks", "remove", "gone")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"consumer sink-gone on CHAPAR_EVENTS: would delete it, with 3 messages it had not read",
		"consumer retry-gone on CHAPAR_RETRIES: would delete it",
		"would drop 1 retries and replays waiting for it",
		"keeps its 1 dead letters",
		"dry run: nothing changed",
	} {
		if !strings.Contains(dry, want) {
			t.Errorf("dry run lacks %q:\n%s", want, dry)
		}
	}
	if f := fp(); len(f.Consumers) != 2 || f.Retries != 1 {
		t.Fatalf("the dry run changed something: %+v", f)
	}

	out, err := cli("sinks", "remove", "gone", "--yes", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Consumers []struct {
			Name    string
			Pending uint64
		}
		Retries     uint64
		DeadLetters int `json:"dead_letters_kept"`
		Removed     bool
	}
	if err := json.Unmarshal([]byte(out), &r); err != nil || !r.Removed || len(r.Consumers) != 2 || r.Consumers[0].Pending != 3 || r.Retries != 1 || r.DeadLetters != 1 {
		t.Errorf("remove --json: %v %+v\n%s", err, r, out)
	}
	if f := fp(); f.Exists() {
		t.Errorf("left on the server: %+v", f)
	}
	if recs, err := dlq.NewStore(e.JS, e.Topo).List(ctx, dlq.Filter{Sink: "gone"}, 0); err != nil || len(recs) != 1 {
		t.Errorf("dead letters of gone after removal: %d, %v; want 1 kept", len(recs), err)
	}
	// Nothing of it stays in the events stream: with interest retention
	// the events chabok delivered go once its consumer is gone; with
	// limits they are there for audit, read by no sink of gone's.
	st, err := e.JS.Stream(ctx, e.Topo.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	if info := st.CachedInfo(); info.Config.Retention == jetstream.InterestPolicy && info.State.Msgs != 0 {
		t.Errorf("%d events left in an interest stream once gone was removed", info.State.Msgs)
	}
	again, err := cli("sinks", "remove", "gone", "--yes")
	if err != nil || !strings.Contains(again, "nothing to remove") {
		t.Errorf("second removal: %v\n%s", err, again)
	}
}

// Removing the lead while no other sink is one: the next dispatcher's
// first sink would become the lead with no old lead's floor to check
// from, and what the old lead had not read would be checked by no one.
// Refused until a dispatcher whose config lacks it has made another sink
// the lead (which checks that backlog); then it goes.
func TestSinksRemoveRefusesTheOnlyLeadUntilAnotherLeads(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lead, other := e.Sink("lead", emulator.Chabok, nil, nil), e.Sink("other", emulator.Chabok, nil, nil)
	stop := func(d *testenv.Dispatcher) {
		t.Helper()
		if err := d.Stop(); err != nil {
			t.Fatal(err)
		}
		d.NC.Close() // its pull requests end with its connection
	}
	stop(e.Start([]config.Sink{lead, other}, []config.Route{{Sinks: []string{"lead", "other"}}}))
	url := e.Server.ClientURL()
	cli := func(args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := runCommand(ctx, append(args, "--nats-url", url), &out, &errOut)
		return out.String(), err
	}
	idle := func(sink string) func() bool {
		return func() bool {
			f, err := e.Topo.Footprint(ctx, e.JS, sink)
			return err == nil && len(f.Consuming()) == 0
		}
	}
	testenv.Eventually(t, 40*time.Second, "no pull requests left on lead", idle("lead"))
	dry, err := cli("sinks", "remove", "lead")
	if err != nil || !strings.Contains(dry, "is a lead") {
		t.Errorf("dry run: %v, want it to say the sink is a lead:\n%s", err, dry)
	}
	if _, err := cli("sinks", "remove", "lead", "--yes"); err == nil || !strings.Contains(err.Error(), "no other sink is a lead yet") {
		t.Errorf("removal of the only lead: %v, want a refusal", err)
	}
	if f, err := e.Topo.Footprint(ctx, e.JS, "lead"); err != nil || len(f.Consumers) != 2 {
		t.Fatalf("the refusal changed something: %+v %v", f, err)
	}
	stop(e.Start([]config.Sink{other}, []config.Route{{Sinks: []string{"other"}}})) // other is the lead now
	testenv.Eventually(t, 40*time.Second, "no pull requests left on lead", idle("lead"))
	if _, err := cli("sinks", "remove", "lead", "--yes"); err != nil {
		t.Errorf("removal once another sink leads: %v", err)
	}
}

// Removing a lead with a backlog while another set of sinks has its lead
// (replicas running disjoint configs): the other lead checks that backlog
// for its own sinks only, and a sink made this set's lead after the
// removal would check from the other lead's floor, past it. Refused,
// saying why and what to do; the dry run says so too; --force removes it.
// Once the set's next config has made its lead (which sweeps the
// backlog), it goes without --force (TestReviewRemovingASetsLeadWhileAnotherSetLeads).
func TestSinksRemoveRefusesALeadWithABacklogWhileAnotherSetLeads(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lead, b, other := e.Sink("lead", emulator.Chabok, nil, nil), e.Sink("b", emulator.Chabok, nil, nil), e.Sink("other", emulator.Chabok, nil, nil)
	stop := func(d *testenv.Dispatcher) {
		t.Helper()
		if err := d.Stop(); err != nil {
			t.Fatal(err)
		}
		d.NC.Close() // its pull requests end with its connection
	}
	stop(e.Start([]config.Sink{lead, b}, []config.Route{{Sinks: []string{"lead", "b"}}}))
	for _, u := range []string{"u1", "u2", "u3"} {
		e.Publish(testenv.Track(t, "order_paid", u))
	}
	stop(e.Start([]config.Sink{other}, []config.Route{{Sinks: []string{"other"}}})) // the other set, and its lead
	url := e.Server.ClientURL()
	cli := func(args ...string) (string, string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := runCommand(ctx, append(args, "--nats-url", url), &out, &errOut)
		return out.String(), errOut.String(), err
	}
	testenv.Eventually(t, 40*time.Second, "no pull requests left on lead", func() bool {
		f, err := e.Topo.Footprint(ctx, e.JS, "lead")
		return err == nil && len(f.Consuming()) == 0
	})
	want := "sink lead is a lead with 3 events it has not read and 0 it has not acked"
	if dry, _, err := cli("sinks", "remove", "lead"); err != nil || !strings.Contains(dry, "--yes would refuse: "+want) {
		t.Errorf("dry run: %v, want it to say --yes would refuse:\n%s", err, dry)
	}
	_, _, err := cli("sinks", "remove", "lead", "--yes")
	if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "other, whose config lacked b") ||
		!strings.Contains(err.Error(), "dispatcher sinks resume lead") {
		t.Errorf("removal of a lead with a backlog while another set leads: %v, want a refusal saying why and what to do", err)
	}
	if f, err := e.Topo.Footprint(ctx, e.JS, "lead"); err != nil || len(f.Consumers) != 2 {
		t.Fatalf("the refusal changed something: %+v %v", f, err)
	}
	_, errOut, err := cli("sinks", "remove", "lead", "--yes", "--force")
	if err != nil || !strings.Contains(errOut, "--force: removing sink lead anyway") {
		t.Errorf("removal with --force: %v, want it done, saying what it risks:\n%s", err, errOut)
	}
	if f, err := e.Topo.Footprint(ctx, e.JS, "lead"); err != nil || f.Exists() {
		t.Errorf("left on the server after --force: %+v %v", f, err)
	}
}
