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
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "publisher:", err)
		}
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("publisher", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("nats-url", envOr("NATS_URL", nats.DefaultURL), "NATS URL (env NATS_URL)")
	prefix := fs.String("subject-prefix", envelope.DefaultSubjectPrefix, "subject prefix (streams.subject_prefix)")
	file := fs.String("file", "", "publish envelopes from this JSON array or NDJSON file; - for stdin")
	typ := fs.String("type", envelope.TypeTrack, "event type for a single event from flags")
	source := fs.String("source", "publisher", "CloudEvents source")
	name := fs.String("name", "", "event name (track, purchase)")
	userID := fs.String("user-id", "", "data.user.id")
	revenue := fs.String("revenue", "", "purchase revenue")
	currency := fs.String("currency", "IRR", "purchase currency")
	dest := fs.String("destinations", "", "comma-separated sinks, overriding routing")
	id := fs.String("id", "", "envelope id (default: a new UUIDv7)")
	timeout := fs.Duration("timeout", 10*time.Second, "per-publish timeout")
	p := props{}
	fs.Var(p, "prop", "property key=value (repeatable)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	nc, err := nats.Connect(*url, nats.Name("chapar-publisher"))
	if err != nil {
		return fmt.Errorf("connect to %s: %w", *url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	pub := envelope.NewPublisher(js, envelope.WithSubjectPrefix(*prefix))
	publish := func(raw []byte) error {
		ev, err := envelope.Parse(raw, envelope.DefaultMaxBytes)
		if err != nil {
			return err
		}
		pctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		ack, err := pub.PublishRaw(pctx, ev.Type, ev.ID, raw)
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

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
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
