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

// The command to go on is the job's own, whatever flags it was given: the
// NATS flags (without them it goes on against the config's server, or the
// embedded one), values a shell would split quoted, and no password.
func TestRedeliverResumeArgs(t *testing.T) {
	until := time.Date(2026, 12, 7, 10, 0, 0, 5, time.UTC)
	base := "--sink hook --config chapar.yaml --until 2026-12-07T10:00:00.000000005Z"
	for _, tc := range []struct {
		name string
		c    cliSinksRedeliver
		want string
	}{
		{"the sink and config alone", cliSinksRedeliver{}, base},
		{"filters, all and rate", cliSinksRedeliver{Type: "chapar.track", Name: "order_*", All: true, Rate: 12.5},
			base + " --type chapar.track --name 'order_*' --all --rate 12.5"},
		{"a subject with a space and a quote", cliSinksRedeliver{Subject: "user 'x'"},
			base + ` --subject 'user '\''x'\'''`},
		{"the server and credentials", cliSinksRedeliver{natsFlags: natsFlags{Server: "nats://a:4222,nats://b:4222", Creds: "/etc/chapar/ops.creds"}},
			base + " --nats-url nats://a:4222,nats://b:4222 --creds /etc/chapar/ops.creds"},
		{"a password in the URL is not printed", cliSinksRedeliver{natsFlags: natsFlags{Server: "nats://ops:s3cret@a:4222"}},
			base + " --nats-url nats://ops:xxxxx@a:4222"},
		{"a context and TLS files", cliSinksRedeliver{natsFlags: natsFlags{Context: "prod", NKey: "k.nk", TLSCert: "c.pem", TLSKey: "k.pem", TLSCA: "ca.pem"}},
			base + " --context prod --nkey k.nk --tlscert c.pem --tlskey k.pem --tlsca ca.pem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tc.c
			c.Sink, c.Config = "hook", "chapar.yaml"
			if got := resumeArgs(&c, until); got != tc.want {
				t.Errorf("resumeArgs:\n got %s\nwant %s", got, tc.want)
			}
			if strings.Contains(resumeArgs(&c, until), "s3cret") {
				t.Error("the password is printed")
			}
		})
	}
}
