package main

// The systems under test and how each is started: Chapar as users run it
// (the dispatcher binary with a generated config file), and the two peers
// from the bench/peers module. Chapar is a black box here: the bench knows
// only the subject producers publish to and what arrives at the vendor.

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// system is one program under test.
type system struct {
	name  string // chapar | watermill | lean
	label string
	// subject is where the bench publishes an event with the given
	// partition key and type over that many partitions.
	subject func(key, typ string, partitions int) string
	// prepare makes what the system expects to exist before it starts.
	prepare func(ctx context.Context, js jetstream.JetStream) error
	// start runs the system against natsURL, delivering to each vendor URL
	// with workers concurrent requests per sink, events spread over
	// partitions; files go in dir.
	start func(natsURL string, vendorURLs []string, sc scenario, dir string) (*proc, error)
	// measure, when set, measures the system in a scenario in place of
	// harness.measure: the ceilings, which are judged otherwise
	// (ceilings.go).
	measure func(ctx context.Context, h *harness, sc scenario) result
}

var systemNames = []string{"chapar", "watermill", "lean"}

// extraSystems can be asked for by name but are not in the default run.
var extraSystems = []string{"chapar-interest", "chapar-norecords", "chapar-filter", "chapar-nofilter", chaparEnvSystem}

// systems returns the named systems, with the binaries in bin.
func systems(names []string, bin string, chaparEnv []string) ([]system, error) {
	var out []system
	for _, n := range names {
		switch n {
		case "chapar", "chapar-interest", "chapar-norecords", "chapar-filter", "chapar-nofilter":
			// chapar-interest is the dispatcher built with the events
			// streams' retention before v3 (interest: an event leaves on
			// its last ack), to measure limits retention against it in
			// the same run (docs/design.md, "Retention").
			// chapar-norecords is the same binary writing no delivery
			// records (streams.record_deliveries: false), to measure what
			// `events show` costs (docs/design.md, "Looking an event up");
			// chapar-filter routes through a content filter on the data
			// that every event passes, to measure a filter's cost.
			label, binary := "Chapar", "dispatcher"
			var v chaparVariant
			switch n {
			case "chapar-interest":
				label, binary = "Chapar (interest retention)", "dispatcher-interest"
			case "chapar-norecords":
				label, v.streams = "Chapar (no delivery records)", "  record_deliveries: false\n"
			case "chapar-filter":
				label, v.route = "Chapar (a content filter on the route)", "    filter: data.properties.items >= 1 && data.user.id != \"\"\n"
			case "chapar-nofilter":
				// The same binary with streams.filter_by_route: false:
				// every sink's consumer reads the whole stream and skips
				// what is not routed to it, as before issue 20.
				label, v.streams = "Chapar (filter_by_route: false)", "  filter_by_route: false\n"
			}
			out = append(out, system{name: n, label: label,
				// As the Go publisher does (envelope.Publisher).
				subject: func(key, typ string, partitions int) string {
					return envelope.PartitionSubject("chapar", typ, envelope.Partition(key, partitions), partitions)
				},
				prepare: func(context.Context, jetstream.JetStream) error { return nil },
				start: func(natsURL string, urls []string, sc scenario, dir string) (*proc, error) {
					return startChapar(filepath.Join(bin, binary), natsURL, urls, sc, dir, v)
				}})
		case "watermill", "lean":
			label := map[string]string{"watermill": "Watermill", "lean": "lean"}[n]
			out = append(out, system{name: n, label: label, subject: func(string, string, int) string { return peerSubject }, prepare: preparePeerStream,
				start: func(natsURL string, urls []string, sc scenario, dir string) (*proc, error) {
					return startProc(n, filepath.Join(dir, n+".log"), nil, filepath.Join(bin, n),
						"-nats-url", natsURL, "-stream", peerStream, "-durable", "bench",
						"-vendors", strings.Join(urls, ","), "-token", chabokToken, "-workers", strconv.Itoa(sc.workers))
				}})
		case chaparEnvSystem:
			out = append(out, chaparWithEnv(bin, chaparEnv))
		case jsCeiling, httpCeiling:
			out = append(out, ceiling(n, bin))
		default:
			return nil, fmt.Errorf("unknown system %q (have %s)", n, strings.Join(append(slices.Clone(defaultSystems()), extraSystems...), ", "))
		}
	}
	return out, nil
}

// The peers' stream: what Chapar's events stream is (file storage, one
// replica, limits retention, 10 minute de-duplication window), made by the
// bench as an operator would; each peer binds its durable consumers to it.
const (
	peerStream  = "BENCH"
	peerSubject = "bench.events.track"
)

func preparePeerStream(ctx context.Context, js jetstream.JetStream) error {
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       peerStream,
		Subjects:   []string{"bench.events.>"},
		Retention:  jetstream.LimitsPolicy,
		Storage:    jetstream.FileStorage,
		Replicas:   1,
		Duplicates: 10 * time.Minute,
	})
	return err
}

// startChapar writes a config file with one Chabok sink per vendor URL
// (or the scenario's vendor), every event routed to all of them, and runs
// `dispatcher run`.
// chaparVariant is what a variant of Chapar adds to the generated config
// (lines under streams:, and under its one route) and to its environment.
type chaparVariant struct {
	streams, route string
	env            []string
}

func startChapar(bin, natsURL string, urls []string, sc scenario, dir string, v chaparVariant) (*proc, error) {
	workers, partitions := sc.workers, max(sc.partitions, 1)
	replicas := 1
	if strings.Contains(natsURL, ",") { // a cluster
		replicas = 3
	}
	admin, err := freePort()
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	// Defaults everywhere else, as a user would run it (info logs: none per
	// delivery).
	fmt.Fprintf(&b, "# Written by cmd/bench.\nadmin:\n  listen: 127.0.0.1:%d\n", admin)
	// On a cluster, three stream replicas as in production: JetStream puts
	// every new single-replica stream on one server (measured: all three
	// partitions on bench-1), while the leaders of replicated ones can be
	// spread (topology.SpreadLeaders).
	fmt.Fprintf(&b, "streams:\n  replicas: %d\n  partitions: %d\n%s", replicas, partitions, v.streams)
	fmt.Fprintf(&b, "sink_defaults:\n  concurrency: %d\nsinks:\n", workers)
	var names []string
	for i, u := range urls {
		name := fmt.Sprintf("chabok-%d", i)
		if sc.vendor == emulator.Webhook {
			name = fmt.Sprintf("webhook-%d", i)
			// Signed, as the receiver (the emulator) demands.
			fmt.Fprintf(&b, "  - name: %s\n    vendor: webhook\n    base_url: %s\n    settings: {url: %s, signing: {secrets: [%s]}}\n", name, u, u, webhookSecret())
		} else if sc.vendor == emulator.MetrixGateway {
			name = "metrix-gateway"
			s := emulator.DemoSettings(emulator.MetrixGateway)
			fmt.Fprintf(&b, "  - name: %s\n    vendor: metrix-gateway\n    base_url: %s\n    settings: {app_id: %s, api_key: %s}\n    events: {order_paid: aewqd}\n",
				name, u, s["app_id"], s["api_key"])
		} else {
			fmt.Fprintf(&b, "  - name: %s\n    vendor: chabok\n    base_url: %s\n    settings: {app_id: demoapp, access_token: %s}\n", name, u, chabokToken)
		}
		names = append(names, name)
		if sc.batch > 0 {
			// The Metrix gateway's window is what a user's request
			// gathers: a second of a backlog, bounded by max_ack_pending.
			wait := "50ms"
			if sc.vendor == emulator.MetrixGateway {
				wait = "1s"
			}
			fmt.Fprintf(&b, "    batch: {max_items: %d, max_wait: %s}\n", sc.batch, wait)
		}
		if sc.maxAckPending > 0 {
			fmt.Fprintf(&b, "    max_ack_pending: %d\n", sc.maxAckPending)
		}
	}
	if sc.split {
		// Each event to one sink, by its type (or by its name: the
		// worker's check, not the consumer's filter); the probes, track
		// events named probe, to every sink.
		b.WriteString("routes:\n")
		for k, name := range names {
			if sc.byName {
				fmt.Fprintf(&b, "  - {types: [%s], names: [%s], sinks: [%s]}\n", envelope.TypeTrack, splitName(k), name)
			} else {
				fmt.Fprintf(&b, "  - {types: [%s], sinks: [%s]}\n", splitType(k), name)
			}
		}
		fmt.Fprintf(&b, "  - {types: [%s], names: [probe], sinks: [%s]}\n", envelope.TypeTrack, strings.Join(names, ", "))
	} else {
		fmt.Fprintf(&b, "routes:\n  - sinks: [%s]\n%s", strings.Join(names, ", "), v.route)
	}
	cfg := filepath.Join(dir, "chapar.yaml")
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		return nil, err
	}
	p, err := startProc("dispatcher", filepath.Join(dir, "dispatcher.log"), v.env, bin, "run", "--config", cfg, "--nats-url", natsURL)
	if err != nil {
		return nil, err
	}
	// Events wait for their consumers, not the other way round: a sink's
	// consumer starts with new events, so one published before it is bound
	// never reaches that sink. /readyz says every consumer is bound.
	if err := p.awaitReady(fmt.Sprintf("http://127.0.0.1:%d/readyz", admin), time.Minute); err != nil {
		_ = p.stop(10 * time.Second)
		return nil, err
	}
	return p, nil
}

// splitType and splitName are what routes an event of a split scenario to
// sink k: a type of its own (by type), or a track event's name (by name).
func splitType(k int) string { return fmt.Sprintf("com.bench.k%d", k) }
func splitName(k int) string { return fmt.Sprintf("k%d", k) }

// splitKind is event seq's type and name in a split scenario over sinks
// sinks: event seq goes to sink seq mod sinks; a probe (seq < 0), a track
// event named probe, to every sink.
func splitKind(sinks int, byName bool) func(seq int) (string, string) {
	return func(seq int) (string, string) {
		switch {
		case seq < 0:
			return envelope.TypeTrack, "probe"
		case byName:
			return envelope.TypeTrack, splitName(seq % sinks)
		default:
			return splitType(seq % sinks), "order_paid"
		}
	}
}

// webhookSecret is the emulated receiver's signing secret.
func webhookSecret() string {
	signing, _ := emulator.DemoSettings(emulator.Webhook)["signing"].(emulator.Settings)
	secrets, _ := signing["secrets"].([]any)
	if len(secrets) == 0 {
		return ""
	}
	s, _ := secrets[0].(string)
	return s
}
