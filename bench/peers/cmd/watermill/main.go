// Command watermill is the benchmark's Watermill peer: watermill-nats's
// JetStream subscriber (pull, Consume) bound to a durable consumer per sink,
// and a Watermill router whose handler POSTs each message to the vendor.
// The subscriber holds one message in flight per subscription until it is
// acked, so a sink's concurrency is its number of router handlers; each
// handler's subscription buffers its share of the consumer's max ack
// pending (with nats.go's default of 500 each, a few subscriptions hold
// every message the consumer lets out and the rest sit idle: 14% of the
// ideal rate at 256 handlers against a 50 ms vendor).
//
//	watermill -nats-url nats://127.0.0.1:4222 -stream BENCH -vendors http://127.0.0.1:9101/api -workers 16
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmjs "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/jetstream"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/bench/peers/internal/peer"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "watermill:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	o, err := peer.ParseFlags("watermill", args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	// Watermill's standard logger writes a line per message at Info; a
	// service would run with its own logger at warn or above.
	logger := watermill.NopLogger{}
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 20 * time.Second}, logger)
	if err != nil {
		return err
	}
	nc, err := nats.Connect(o.NATSURL, nats.Name("bench-watermill-setup"))
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	for i, vendor := range o.Vendors {
		if _, err := o.EnsureConsumer(ctx, js, i); err != nil {
			return err
		}
		// The stream is the topic; the durable is the consumer "group".
		sub, err := wmjs.NewSubscriber(wmjs.SubscriberConfig{
			URL:                 o.NATSURL,
			Logger:              logger,
			AckWaitTimeout:      30 * time.Second,
			ResourceInitializer: wmjs.ExistingConsumer(durable, o.ConsumerName(i)),
			ConsumeOptions:      []jetstream.PullConsumeOpt{jetstream.PullMaxMessages(max(1, peer.MaxAckPending/o.Workers))},
		})
		if err != nil {
			return err
		}
		chabok := peer.NewChabok(vendor, o.Token, o.Workers)
		post := func(msg *message.Message) error { return chabok.Post(msg.Context(), msg.Payload) }
		for w := range o.Workers {
			router.AddConsumerHandler(fmt.Sprintf("sink%d-%d", i, w), o.Stream, sub, post)
		}
	}
	nc.Close()
	// SIGTERM while the handlers are still subscribing is a clean stop too.
	if err := router.Run(ctx); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

// durable names the consumer ExistingConsumer binds: the group is the
// durable's name.
func durable(_, group string) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{Name: group}
}
