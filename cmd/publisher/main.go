// Command publisher publishes Chapar envelopes to NATS JetStream and waits
// for JetStream's ack of each: one from flags, or many from a JSON array or
// NDJSON file (or stdin). It exits non-zero if any publish failed.
//
//	publisher --type chapar.track --name order_paid --user-id u42 --prop orderId=A-1 --prop items=3
//	publisher --file events.ndjson
//	cat events.json | publisher --file -
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kong"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/buildinfo"
	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

type props map[string]any

func (p props) String() string { return "" }

// Set parses key=value; values that read as numbers or booleans keep
// their type (quote them in JSON input to force a string).
func (p props) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want key=value, got %q", s)
	}
	switch {
	case v == "true" || v == "false":
		p[k] = v == "true"
	case isNumber(v):
		p[k] = json.Number(v)
	default:
		p[k] = v
	}
	return nil
}

func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := mainCode(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// mainCode runs a command line as main does and returns its exit code: 0,
// 1 for a failure, 2 for a usage error (help is on stdout, exit 0).
func mainCode(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	err := run(ctx, args, stdin, stdout, stderr)
	if err == nil {
		return 0
	}
	fmt.Fprintln(stderr, "publisher:", err)
	var u usageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

// usageError marks a command-line mistake (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// cli is the publisher's flags, parsed by kong.
type cli struct {
	Version kong.VersionFlag `help:"Print the version and exit."`

	Server  string `default:"${default_url}" env:"NATS_URL" aliases:"nats-url" help:"NATS server URL(s), default ${default_url}." placeholder:"URL" group:"nats"`
	Creds   string `help:"NATS user credentials file." placeholder:"FILE" group:"nats"`
	NKey    string `name:"nkey" help:"NATS NKey seed file." placeholder:"FILE" group:"nats"`
	TLSCert string `name:"tlscert" help:"TLS client certificate." placeholder:"FILE" group:"nats"`
	TLSKey  string `name:"tlskey" help:"TLS client key." placeholder:"FILE" group:"nats"`
	TLSCA   string `name:"tlsca" help:"TLS CA certificate to verify the server." placeholder:"FILE" group:"nats"`

	SubjectPrefix string        `default:"${default_prefix}" help:"Subject prefix (streams.subject_prefix)."`
	Partitions    int           `default:"1" help:"Partitions (streams.partitions of the dispatchers' config); each event goes to its key's partition." placeholder:"N"`
	File          string        `help:"Publish envelopes from this JSON array or NDJSON file; - for stdin." placeholder:"FILE"`
	Type          string        `default:"${default_type}" help:"Event type for a single event from flags."`
	Source        string        `default:"publisher" help:"CloudEvents source."`
	Name          string        `help:"Event name (track, purchase)."`
	UserID        string        `help:"data.user.id."`
	Revenue       string        `help:"Purchase revenue."`
	Currency      string        `default:"IRR" help:"Purchase currency."`
	Destinations  string        `help:"Comma-separated sinks, overriding routing (the event from flags: with --file, each envelope carries its own)."`
	ID            string        `help:"Envelope id (default: a new UUIDv7)."`
	Timeout       time.Duration `default:"10s" help:"Per-publish timeout."`
	Prop          []string      `help:"Property key=value (repeatable)." placeholder:"KEY=VALUE" sep:"none"`
}

// exited is how kong's exit (after --help or --version) unwinds a parse.
type exited int

func parse(args []string, stdout, stderr io.Writer) (c *cli, err error) {
	c = &cli{}
	parser, err := kong.New(c,
		kong.Name("publisher"),
		kong.Description("Publishes Chapar envelopes to NATS JetStream and waits for JetStream's ack of each: one from flags, or many from a JSON array or NDJSON file (or stdin). Exits non-zero if any publish failed."),
		kong.Writers(stdout, stderr),
		kong.Exit(func(code int) { panic(exited(code)) }),
		kong.Vars{
			"version":        "chapar publisher " + buildinfo.Version(),
			"default_url":    nats.DefaultURL,
			"default_prefix": envelope.DefaultSubjectPrefix,
			"default_type":   envelope.TypeTrack,
		},
		kong.ExplicitGroups([]kong.Group{{Key: "nats", Title: "NATS connection:"}}),
		kong.ConfigureHelp(kong.HelpOptions{Compact: true}),
	)
	if err != nil {
		return nil, err
	}
	defer func() {
		if r := recover(); r != nil {
			code, ok := r.(exited)
			if !ok {
				panic(r)
			}
			c, err = nil, nil
			if code != 0 {
				err = usageError{fmt.Sprintf("exit %d", code)}
			}
		}
	}()
	if _, err := parser.Parse(args); err != nil {
		return nil, usageError{fmt.Sprintf("%v (see publisher --help)", err)}
	}
	return c, nil
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	c, err := parse(args, stdout, stderr)
	if c == nil || err != nil {
		return err // nil after --help or --version
	}
	url, prefix, file, typ, source, name, userID := &c.Server, &c.SubjectPrefix, &c.File, &c.Type, &c.Source, &c.Name, &c.UserID
	revenue, currency, dest, id, timeout := &c.Revenue, &c.Currency, &c.Destinations, &c.ID, &c.Timeout
	if c.Partitions < 1 || c.Partitions > config.MaxPartitions {
		return usageError{fmt.Sprintf("--partitions: is %d; use streams.partitions of the dispatchers' config, 1 to %d", c.Partitions, config.MaxPartitions)}
	}
	if err := c.checkFileFlags(); err != nil {
		return err
	}
	p := props{}
	for _, kv := range c.Prop {
		if err := p.Set(kv); err != nil {
			return usageError{"--prop: " + err.Error()}
		}
	}
	opts := []nats.Option{nats.Name("chapar-publisher")}
	if c.Creds != "" {
		opts = append(opts, nats.UserCredentials(c.Creds))
	}
	if c.NKey != "" {
		o, err := nats.NkeyOptionFromSeed(c.NKey)
		if err != nil {
			return fmt.Errorf("--nkey: %w", err)
		}
		opts = append(opts, o)
	}
	if c.TLSCA != "" {
		opts = append(opts, nats.RootCAs(c.TLSCA))
	}
	if c.TLSCert != "" {
		opts = append(opts, nats.ClientCert(c.TLSCert, c.TLSKey))
	}
	nc, err := nats.Connect(*url, opts...)
	if err != nil {
		return fmt.Errorf("connect to %s: %w", config.RedactURL(*url), err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	pub := envelope.NewPublisher(js, envelope.WithSubjectPrefix(*prefix), envelope.WithPartitions(c.Partitions))
	publish := func(raw []byte) error {
		ev, err := envelope.Parse(raw, envelope.DefaultMaxBytes)
		if err != nil {
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		ack, err := pub.PublishRaw(pctx, &ev.Envelope, raw)
		if err != nil {
			return err
		}
		dup := ""
		if ack.Duplicate {
			dup = " (duplicate: already stored)"
		}
		fmt.Fprintf(stdout, "published %s %s as %s #%d%s\n", ev.Type, ev.ID, ack.Stream, ack.Sequence, dup)
		return nil
	}

	if *file == "" {
		env, err := fromFlags(*typ, *source, *name, *userID, *revenue, *currency, *dest, *id, p)
		if err != nil {
			return err
		}
		raw, err := env.Marshal()
		if err != nil {
			return err
		}
		return publish(raw)
	}
	in := stdin
	if *file != "-" {
		f, err := os.Open(*file)
		if err != nil {
			return err
		}
		defer f.Close()
		in = f
	}
	items, err := readEnvelopes(in)
	if err != nil {
		return err
	}
	failed := 0
	for i, raw := range items {
		if err := publish(raw); err != nil {
			failed++
			fmt.Fprintf(stderr, "envelope %d: %v\n", i+1, err)
		}
	}
	fmt.Fprintf(stdout, "%d published, %d failed\n", len(items)-failed, failed)
	if failed > 0 {
		return fmt.Errorf("%d of %d envelopes were not published", failed, len(items))
	}
	return nil
}

// checkFileFlags refuses, with --file, the flags that build one event from
// flags: they would not apply to the file's envelopes, which are published
// as they are (their ids, destinations and bytes are the producer's), and
// ignoring them silently published events to sinks nobody asked for. A
// flag with a default (--type, --source, --currency) is refused when set
// to anything else.
func (c *cli) checkFileFlags() error {
	if c.File == "" {
		return nil
	}
	var set []string
	for _, f := range []struct {
		flag string
		set  bool
	}{
		{"--type", c.Type != envelope.TypeTrack},
		{"--source", c.Source != "publisher"},
		{"--name", c.Name != ""},
		{"--user-id", c.UserID != ""},
		{"--revenue", c.Revenue != ""},
		{"--currency", c.Currency != "IRR"},
		{"--destinations", c.Destinations != ""},
		{"--id", c.ID != ""},
		{"--prop", len(c.Prop) > 0},
	} {
		if f.set {
			set = append(set, f.flag)
		}
	}
	switch len(set) {
	case 0:
		return nil
	case 1:
		return usageError{fmt.Sprintf("%s: builds the event from flags; with --file, each envelope carries its own (for sinks: its destinations extension), or drop --file", set[0])}
	}
	return usageError{fmt.Sprintf("%s: build the event from flags; with --file, each envelope carries its own (for sinks: its destinations extension), or drop --file", strings.Join(set, ", "))}
}

func fromFlags(typ, source, name, userID, revenue, currency, dest, id string, p props) (*envelope.Envelope, error) {
	var opts []envelope.Option
	if dest != "" {
		opts = append(opts, envelope.WithDestinations(strings.Split(dest, ",")...))
	}
	if id != "" {
		opts = append(opts, envelope.WithID(id))
	}
	if userID != "" {
		opts = append(opts, envelope.WithSubject(userID))
	}
	user := envelope.User{ID: userID}
	track := envelope.Track{Name: name, Properties: p, User: user}
	switch typ {
	case envelope.TypeTrack:
		return envelope.New(typ, source, track, opts...)
	case envelope.TypePurchase:
		return envelope.New(typ, source, envelope.Purchase{Track: track, Revenue: json.Number(revenue), Currency: currency}, opts...)
	case envelope.TypeIdentify:
		return envelope.New(typ, source, envelope.Identify{User: user, Traits: envelope.Traits{CustomAttributes: p}}, opts...)
	}
	return nil, fmt.Errorf("--type %s: build it as JSON and use --file (flags cover track, purchase and identify)", typ)
}

// readEnvelopes accepts a JSON array, one JSON object, or NDJSON.
func readEnvelopes(r io.Reader) ([][]byte, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var arr []json.RawMessage
		if err := json.Unmarshal(trimmed, &arr); err != nil {
			return nil, fmt.Errorf("JSON array: %w", err)
		}
		out := make([][]byte, len(arr))
		for i, a := range arr {
			out[i] = a
		}
		return out, nil
	}
	// A stream of JSON values: NDJSON, one object, or objects one after
	// another, pretty-printed or not.
	var out [][]byte
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	for dec.More() {
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return out, fmt.Errorf("envelope %d: not JSON: %w", len(out)+1, err)
		}
		out = append(out, v)
	}
	return out, nil
}
