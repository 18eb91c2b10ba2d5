// Command lean is the benchmark's lower bound for one request per message:
// a hand-written nats.go/jetstream consumer per sink (Consume), N workers
// that each POST one message to the vendor and Ack it. No validation, no
// retries beyond a NAK, no metrics.
//
//	lean -nats-url nats://127.0.0.1:4222 -stream BENCH -vendors http://127.0.0.1:9101/api -workers 16
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/bench/peers/internal/peer"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "lean:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	o, err := peer.ParseFlags("lean", args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	nc, err := nats.Connect(o.NATSURL, nats.Name("bench-lean"))
	if err != nil {
		return err
	}
	defer nc.Drain() // flushes the last acks
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	var workers sync.WaitGroup
	for i, vendor := range o.Vendors {
		cons, err := o.EnsureConsumer(ctx, js, i)
		if err != nil {
			return err
		}
		chabok := peer.NewChabok(vendor, o.Token, o.Workers)
		msgs := make(chan jetstream.Msg)
		cc, err := cons.Consume(func(m jetstream.Msg) {
			select {
			case msgs <- m:
			case <-ctx.Done(): // not started: redelivered after ack wait
			}
		})
		if err != nil {
			return err
		}
		defer cc.Stop()
		for range o.Workers {
			workers.Go(func() {
				for {
					select {
					case m := <-msgs:
						deliver(chabok, m)
					case <-ctx.Done():
						return
					}
				}
			})
		}
	}
	<-ctx.Done()
	workers.Wait()
	return nil
}

// deliver posts one message and acks it; a failed request is retried later.
// A request in flight at shutdown is finished, not cancelled.
func deliver(chabok *peer.Chabok, m jetstream.Msg) {
	if err := chabok.Post(context.Background(), m.Data()); err != nil {
		fmt.Fprintln(os.Stderr, "lean:", err)
		_ = m.NakWithDelay(time.Second)
		return
	}
	_ = m.Ack()
}
