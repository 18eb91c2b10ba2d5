// Command publish publishes one Chapar event from Go and waits for
// JetStream's ack: go run ./examples/publish/go (NATS_URL picks the server).
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

func main() {
	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL // nats://127.0.0.1:4222, where `dispatcher run` listens
	}
	nc, err := nats.Connect(url)
	if err != nil {
		log.Fatalf("connect to %s: %v", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}

	// envelope.New gives the event a fresh UUIDv7 id; keep it if you may
	// retry the publish: JetStream drops a re-published duplicate.
	env, err := envelope.New(envelope.TypeTrack, "shop-api", envelope.Track{
		Name:       "order_paid",
		Properties: map[string]any{"orderId": "A-1001", "items": 3},
		User: envelope.User{
			ID: "user-42", ChabokInstallationID: "inst-9f2c", MetrixUserID: "1415211453000-6513894",
			MetrixSessionID: "sess-77", AdvertisingID: "38400000-8cf0-11bd-b23e-10b96e40000d",
		},
	}, envelope.WithSubject("user-42"))
	if err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Publish validates the envelope, sends it to chapar.events.track with
	// Nats-Msg-Id set to its id, and waits for JetStream's ack.
	ack, err := envelope.NewPublisher(js).Publish(ctx, env)
	if err != nil {
		log.Fatalf("publish %s: %v", env.ID, err)
	}
	fmt.Printf("published %s as %s #%d\n", env.ID, ack.Stream, ack.Sequence)
}
