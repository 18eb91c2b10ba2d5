// Command httpceiling is the benchmark's HTTP ceiling: lean without NATS.
// It reads bench envelopes, one per line, from stdin and POSTs each to
// every vendor with the request lean sends (peer.Chabok: the same body,
// headers and HTTP pool), N workers per vendor. What it reaches is what
// the vendor's HTTP alone costs on this machine, the most any system that
// sends one request per event could do.
//
// Once stdin ends and every request is answered it waits for SIGTERM, so
// the bench measures it alive, as it measures the others.
//
//	httpceiling -vendors http://127.0.0.1:9101/api -workers 16 < envelopes
package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"sync"
	"syscall"

	"github.com/chapar-dev/chapar/bench/peers/internal/peer"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "httpceiling:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	o, err := peer.ParseFlags("httpceiling", args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	var workers sync.WaitGroup
	var queues []chan []byte
	for _, vendor := range o.Vendors {
		chabok := peer.NewChabok(vendor, o.Token, o.Workers)
		q := make(chan []byte, o.Workers)
		queues = append(queues, q)
		for range o.Workers {
			workers.Go(func() {
				for raw := range q {
					if err := chabok.Post(context.Background(), raw); err != nil {
						fmt.Fprintln(os.Stderr, "httpceiling:", err)
					}
				}
			})
		}
	}
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 64<<10), 1<<20)
	for ctx.Err() == nil && in.Scan() {
		raw := slices.Clone(in.Bytes())
		for _, q := range queues {
			select {
			case q <- raw:
			case <-ctx.Done():
			}
		}
	}
	for _, q := range queues {
		close(q)
	}
	workers.Wait()
	if err := in.Err(); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}
