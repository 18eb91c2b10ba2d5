package peer

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Options are the flags every peer takes.
type Options struct {
	NATSURL string
	Stream  string
	Durable string   // consumer i is Durable-i
	Vendors []string // one sink (and one consumer) per vendor base URL
	Token   string
	Workers int
}

// ParseFlags reads the peer flags from args.
func ParseFlags(name string, args []string) (Options, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	var o Options
	var vendors string
	fs.StringVar(&o.NATSURL, "nats-url", "nats://127.0.0.1:4222", "NATS server")
	fs.StringVar(&o.Stream, "stream", "BENCH", "stream to consume (the benchmark creates it)")
	fs.StringVar(&o.Durable, "durable", "bench", "durable consumer name prefix: sink i binds <durable>-<i>")
	fs.StringVar(&vendors, "vendors", "", "comma-separated Chabok base URLs, one sink each (required)")
	fs.StringVar(&o.Token, "token", "demo-chabok-token", "Chabok access token")
	fs.IntVar(&o.Workers, "workers", 16, "concurrent requests per sink")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	for _, v := range strings.Split(vendors, ",") {
		if v = strings.TrimSpace(v); v != "" {
			o.Vendors = append(o.Vendors, strings.TrimSuffix(v, "/"))
		}
	}
	if len(o.Vendors) == 0 {
		return o, errors.New("-vendors is required")
	}
	if o.Workers < 1 {
		return o, errors.New("-workers must be at least 1")
	}
	return o, nil
}

// ConsumerName is sink i's durable consumer.
func (o Options) ConsumerName(i int) string { return fmt.Sprintf("%s-%d", o.Durable, i) }

// MaxAckPending is how many messages a sink's consumer lets out unacked,
// as Chapar's sink consumers (sink_defaults.max_ack_pending).
const MaxAckPending = 1000

// EnsureConsumer creates (or finds) sink i's durable pull consumer, with
// the settings Chapar's sink consumers have: explicit acks, 30 s ack wait,
// 1,000 in flight.
func (o Options) EnsureConsumer(ctx context.Context, js jetstream.JetStream, i int) (jetstream.Consumer, error) {
	return js.CreateOrUpdateConsumer(ctx, o.Stream, jetstream.ConsumerConfig{
		Durable:       o.ConsumerName(i),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
}
