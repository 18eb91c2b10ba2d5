// Command jsceiling is the benchmark's JetStream ceiling: lean without the
// vendor. A nats.go/jetstream consumer per sink (Consume), N workers that
// each take a message and Ack it: no HTTP, no decoding. What it reaches is
// what pull + ack of the backlog costs on this machine, the most any
// system that delivers from JetStream could do.
//
// It records, for each message it acks, the event's benchSeq, its publish
// stamp and when the Ack was sent, and writes them to -receipts when it
// exits (SIGTERM): the bench checks every event was acked exactly once.
//
//	jsceiling -nats-url nats://127.0.0.1:4222 -stream BENCH -sinks 1 -workers 16 -receipts r.txt
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/bench/peers/internal/peer"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "jsceiling:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("jsceiling", flag.ContinueOnError)
	o := peer.Options{}
	var sinks int
	var receipts string
	fs.StringVar(&o.NATSURL, "nats-url", "nats://127.0.0.1:4222", "NATS server")
	fs.StringVar(&o.Stream, "stream", "BENCH", "stream to consume (the benchmark creates it)")
	fs.StringVar(&o.Durable, "durable", "bench", "durable consumer name prefix: sink i binds <durable>-<i>")
	fs.IntVar(&sinks, "sinks", 1, "consumers, each reading every message, as lean has one per vendor")
	fs.IntVar(&o.Workers, "workers", 16, "concurrent workers per consumer")
	fs.StringVar(&receipts, "receipts", "", "file for the receipts, written at exit (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if receipts == "" || sinks < 1 || o.Workers < 1 {
		return errors.New("-receipts is required; -sinks and -workers at least 1")
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	nc, err := nats.Connect(o.NATSURL, nats.Name("bench-jsceiling"))
	if err != nil {
		return err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	recs := peer.NewReceipts(sinks * o.Workers)
	var workers sync.WaitGroup
	for i := range sinks {
		cons, err := o.EnsureConsumer(ctx, js, i)
		if err != nil {
			return err
		}
		// The same hand-off as lean: Consume's callback to N workers.
		msgs := make(chan jetstream.Msg)
		cc, err := cons.Consume(func(m jetstream.Msg) {
			select {
			case msgs <- m:
			case <-ctx.Done():
			}
		})
		if err != nil {
			return err
		}
		defer cc.Stop()
		for w := range o.Workers {
			slot := i*o.Workers + w
			workers.Go(func() {
				for {
					select {
					case m := <-msgs:
						if m.Ack() == nil {
							recs.Add(slot, i, m.Data())
						}
					case <-ctx.Done():
						return
					}
				}
			})
		}
	}
	<-ctx.Done()
	workers.Wait()
	if err := nc.Drain(); err != nil { // flushes the last acks
		return err
	}
	return recs.Write(receipts)
}
