package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/configs"
	"github.com/chapar-dev/chapar/internal/app"
	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// demoEvent is one sample the demo publishes and what it is meant to show.
type demoEvent struct {
	show string
	env  *envelope.Envelope // nil: raw is published as is
	raw  []byte
	// binary publishes env in CloudEvents binary mode (ce-* headers).
	binary bool
}

type cliDemo struct {
	Verbose bool          `help:"Log at debug level too (configs/demo.yaml logs at info): also each event no route matched."`
	Timeout time.Duration `default:"1m" help:"Give up if events have not settled by then."`
}

func (c *cliDemo) Run(ctx context.Context, s *streams) error {
	return demoCmd(ctx, &c.Verbose, &c.Timeout, s.stdout, s.stderr)
}

func demoCmd(ctx context.Context, verbose *bool, timeout *time.Duration, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// 1. The vendors: the emulator on free loopback ports.
	emuCfg := emulator.DemoConfig()
	emu := emulator.New(emuCfg)
	addrs := map[string]string{}
	for _, name := range emu.Names() {
		addrs[name] = "127.0.0.1:0"
	}
	ls, err := emu.Serve(ctx, addrs)
	if err != nil {
		return err
	}
	env := emulator.DemoEnv() // DEMO_<VENDOR>_<KEY>: each emulated vendor's credentials
	for _, l := range ls {
		env["EMULATOR_"+strings.ToUpper(strings.ReplaceAll(l.Vendor, "-", "_"))] = l.URL
	}
	cfg, err := config.Parse(configs.Demo(), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		return fmt.Errorf("configs/demo.yaml: %w", err)
	}

	// 2. JetStream: embedded, in a throwaway directory, on a free port.
	dir, err := os.MkdirTemp("", "chapar-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cfg.NATS.Embedded = config.Embedded{Listen: "127.0.0.1:0", DataDir: dir}
	if *verbose {
		cfg.Dispatcher.LogLevel = "debug"
	}

	// 3. The dispatcher, built as dispatcher run builds it.
	tally := dispatch.NewTally()
	ready := make(chan struct{})
	p, err := app.Start(ctx, cfg, app.Options{LogOutput: stderr, Observer: tally, Ready: func() { close(ready) }})
	if err != nil {
		return err
	}
	defer p.Close()
	conn := p.Conn
	runCtx, stopRun := context.WithCancel(ctx)
	defer stopRun()
	runErr := make(chan error, 1)
	go func() { runErr <- p.Run(runCtx) }()
	select {
	case <-ready:
	case err := <-runErr:
		return fmt.Errorf("dispatcher: %w", err)
	}

	fmt.Fprintf(stdout, "Chapar demo: embedded JetStream at %s, vendor emulator on %d ports\n\n", conn.Server.ClientURL(), len(ls))

	// 4. Events: every type, some meant to fail. Chabok blips first (two
	// 503s) to show a retry.
	emu.Vendor(emulator.Chabok).SetFault(emulator.Fault{Status: 503, Count: 2})
	events, err := demoEvents()
	if err != nil {
		return err
	}
	pub := envelope.NewPublisher(conn.JS)
	publish := func(ev demoEvent) error {
		fmt.Fprintf(stdout, "  publish  %s\n", ev.show)
		switch {
		case ev.env == nil:
			_, err := conn.JS.Publish(ctx, conn.Topo.EventSubject(envelope.TypeTrack), ev.raw)
			return err
		case ev.binary:
			return publishBinary(ctx, conn.JS, conn.Topo, ev.env)
		default:
			_, err := pub.Publish(ctx, ev.env)
			return err
		}
	}
	for _, ev := range events {
		if err := publish(ev); err != nil {
			return fmt.Errorf("publish %s: %w", ev.show, err)
		}
	}
	if err := settle(ctx, conn, cfg, *timeout); err != nil {
		return err
	}
	// A vendor 400 cannot come from a valid envelope, so the emulator is
	// told to answer the next gateway call with one.
	emu.Vendor(emulator.MetrixGateway).SetFault(emulator.Fault{Status: 400, Code: "BAD_REQUEST", Count: 1})
	last, err := envelope.New(envelope.TypeTrack, "demo", envelope.Track{Name: "signup", User: envelope.User{ID: "user-7"}},
		envelope.WithDestinations("metrix-gateway"))
	if err != nil {
		return err
	}
	if err := publish(demoEvent{show: "track signup → metrix-gateway answers 400 BAD_REQUEST", env: last}); err != nil {
		return err
	}
	if err := settle(ctx, conn, cfg, *timeout); err != nil {
		return err
	}
	stopRun()
	if err := <-runErr; err != nil {
		return fmt.Errorf("dispatcher: %w", err)
	}
	return demoSummary(ctx, stdout, tally, emu, dlq.NewStore(conn.JS, conn.Topo), len(events)+1)
}

// settle waits until the router and every sink have nothing pending or in
// flight (retries included).
func settle(ctx context.Context, conn *app.Conn, cfg *config.Config, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	idleSince := time.Time{}
	names := make([]string, len(cfg.Sinks))
	for i, s := range cfg.Sinks {
		names[i] = s.Name
	}
	for time.Now().Before(deadline) {
		idle, err := conn.Topo.Idle(ctx, conn.JS, names)
		if err != nil {
			idle = false
		}
		switch {
		case !idle:
			idleSince = time.Time{}
		case idleSince.IsZero():
			idleSince = time.Now()
		case time.Since(idleSince) > 300*time.Millisecond:
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return errors.New("events did not settle in time (try --timeout 2m on a busy machine)")
}

func publishBinary(ctx context.Context, js jetstream.JetStream, topo topology.Topology, env *envelope.Envelope) error {
	msg := nats.NewMsg(topo.SubjectOf(env))
	msg.Header.Set("ce-specversion", env.SpecVersion)
	msg.Header.Set("ce-id", env.ID)
	msg.Header.Set("ce-source", env.Source)
	msg.Header.Set("ce-type", env.Type)
	msg.Header.Set("Content-Type", envelope.ContentTypeJSON)
	msg.Data = env.Data
	_, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(env.ID))
	return err
}

func demoEvents() ([]demoEvent, error) {
	user := envelope.User{
		ID: "user-42", ChabokInstallationID: "inst-9f2c", MetrixUserID: "1415211453000-6513894",
		MetrixSessionID: "sess-77", AdvertisingID: "38400000-8cf0-11bd-b23e-10b96e40000d", IP: "203.0.113.7",
	}
	props := map[string]any{"orderId": "A-1001", "items": 3, "firstOrder": true, "paidAt": "2026-11-23T10:14:58Z", "categories": []any{"books", "games"}}
	var out []demoEvent
	add := func(show, typ string, data any, opts ...envelope.Option) error {
		env, err := envelope.New(typ, "demo", data, opts...)
		if err != nil {
			return fmt.Errorf("%s: %w", show, err)
		}
		out = append(out, demoEvent{show: show, env: env})
		return nil
	}
	both := user
	both.IDFA = "AEBE52E7-03EE-455A-B3C4-E57283966239"
	steps := []error{
		add("track order_paid → chabok, metrix-s2s, metrix-gateway, webhook", envelope.TypeTrack, envelope.Track{Name: "order_paid", Properties: props, User: user}),
		add("purchase 250000 IRR → chabok, metrix-s2s, metrix-gateway", envelope.TypePurchase, envelope.Purchase{
			Track: envelope.Track{Name: "purchase", Properties: map[string]any{"orderId": "A-1001"}, User: user}, Revenue: "250000", Currency: "IRR"}),
		add("identify user-42 → metrix-gateway", envelope.TypeIdentify, envelope.Identify{User: user, Traits: envelope.Traits{
			FirstName: "Reza", LastName: "Akbari", Email: "reza@example.com", City: "Tehran", Gender: "Male", Birthday: "1990-04-03",
			Channels: []string{"SMS", "Push"}, CustomAttributes: map[string]any{"loyalty_level": "vip"}}}),
		add("notify a post owner → kenar", envelope.TypeNotify, envelope.Notify{Message: "Your ad got 10 new views today",
			Target: envelope.Target{Type: "POST", ID: "AaBbCcDd"}, Buttons: []envelope.Button{{Title: "See stats"}}}),
		add("track level_up → metrix-gateway: unknown slug, 404", envelope.TypeTrack, envelope.Track{Name: "level_up", User: user}),
		add("track order_paid → metrix-freeplan: 403 S2S_FEATURE_NOT_AVAILABLE", envelope.TypeTrack,
			envelope.Track{Name: "order_paid", User: user}, envelope.WithDestinations("metrix-freeplan")),
		add("track order_paid → metrix-wrongkey: 403 INVALID_PARAMETERS", envelope.TypeTrack,
			envelope.Track{Name: "order_paid", User: user}, envelope.WithDestinations("metrix-wrongkey")),
		add("notify a missing user → kenar: 404 NOT_FOUND", envelope.TypeNotify, envelope.Notify{Message: "hello",
			Target: envelope.Target{Type: "USER", ID: "missing-user"}}),
		add("notify with a 3-letter button → kenar: invalid_for_vendor", envelope.TypeNotify, envelope.Notify{Message: "hello",
			Target: envelope.Target{Type: "USER", ID: "u-1"}, Buttons: []envelope.Button{{Title: "Go!"}}}),
		add("track with idfa and advertisingId → metrix-s2s: invalid_for_vendor", envelope.TypeTrack,
			envelope.Track{Name: "order_paid", User: both}, envelope.WithDestinations("metrix-s2s")),
		add("track page_view → no route: counted as unrouted", envelope.TypeTrack, envelope.Track{Name: "page_view", User: user}),
	}
	if err := errors.Join(steps...); err != nil {
		return nil, err
	}
	signup, err := envelope.New(envelope.TypeTrack, "demo", envelope.Track{Name: "signup", User: user})
	if err != nil {
		return nil, err
	}
	out = append(out,
		demoEvent{show: "track signup in binary mode (ce-* headers)", env: signup, binary: true},
		demoEvent{show: "not JSON at all → invalid_envelope", raw: []byte("order_paid user=42")},
		demoEvent{show: "no source, no id → invalid_envelope", raw: []byte(`{"specversion":"1.0","type":"chapar.track","data":{"name":"x","user":{"id":"u"}}}`)},
		demoEvent{show: "unknown type chapar.click → invalid_envelope", raw: []byte(`{"specversion":"1.0","id":"c-1","source":"demo","type":"chapar.click","data":{}}`)},
	)
	return out, nil
}

func demoSummary(ctx context.Context, w io.Writer, tally *dispatch.Tally, emu *emulator.Emulator, store *dlq.Store, published int) error {
	received, unrouted, sinkCounts := tally.Snapshot()
	fmt.Fprintf(w, "\n%d events published, %d received, %d unrouted.\n\n", published, received, unrouted)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SINK\tDELIVERED\tRETRIED\tDEAD-LETTERED")
	for _, s := range sinkCounts {
		var dl []string
		for reason, n := range s.DeadLettered {
			dl = append(dl, fmt.Sprintf("%d %s", n, reason))
		}
		slices.Sort(dl) // map order is random; the summary is not
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", s.Sink, s.Delivered, s.Retried, dash(strings.Join(dl, ", ")))
	}
	_ = tw.Flush()
	fmt.Fprintln(w, "\nWhat the vendors received (emulator):")
	for _, name := range emu.Names() {
		v := emu.Vendor(name)
		fmt.Fprintf(w, "  %-15s %d requests, %d accepted\n", name, v.Count(0), v.Count(200))
	}
	recs, err := store.List(ctx, dlq.Filter{}, 0)
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "\nDead letters (what `dispatcher dlq list` shows against a running system):\n")
	printRecords(w, recs)
	fmt.Fprintln(w, "\nEvery event is accounted for: delivered, dead-lettered with its reason, or counted as unrouted.")
	fmt.Fprint(w, demoNext)
	return nil
}

// demoNext is where the demo sends a newcomer.
const demoNext = `
Next:
  Run it for real: README "Run it for real" runs the emulator as the vendors and
  dispatcher run --config configs/local.yaml, which serves, while it runs:
    http://127.0.0.1:9090/metrics              Prometheus metrics (/healthz, /readyz: health)
    dispatcher dlq list                        its dead letters, and why (dlq show, replay, purge)
  dispatcher config check my.yaml            every error of a config, before deploying
  dispatcher help                            every command; docs/cli.md has them all
`
