package dispatch_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/testenv"
)

// Review rev32, a contract of nats-server the orderer relies on: a redelivery of a message, after the R3 stream's
// and consumer's leaders move, carries the store time of its first
// delivery (heldKey relies on it).
func TestReviewRev32ARedeliveryAfterLeaderChangesKeepsItsStoreTime(t *testing.T) {
	e := testenv.NewCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	s, err := e.JS.CreateStream(ctx, jetstream.StreamConfig{Name: "PROBE32", Subjects: []string{"probe32.>"}, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := e.JS.Publish(ctx, "probe32.x", []byte("m")); err != nil {
			t.Fatal(err)
		}
	}
	c, err := s.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{Durable: "C", AckPolicy: jetstream.AckExplicitPolicy, AckWait: 2 * time.Second, Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	first := map[uint64]int64{}
	fetch := func(want uint64) {
		deadline := time.Now().Add(30 * time.Second)
		got := 0
		for got < 3 && time.Now().Before(deadline) {
			b, err := c.Fetch(3, jetstream.FetchMaxWait(3*time.Second))
			if err != nil {
				continue
			}
			for m := range b.Messages() {
				md, err := m.Metadata()
				if err != nil {
					t.Fatal(err)
				}
				if md.NumDelivered != want {
					continue
				}
				got++
				ts := md.Timestamp.UnixNano()
				if want == 1 {
					first[md.Sequence.Stream] = ts
				} else if first[md.Sequence.Stream] != ts {
					t.Errorf("seq %d: delivery %d stored at %d, first at %d", md.Sequence.Stream, want, ts, first[md.Sequence.Stream])
				}
			}
		}
		if got < 3 {
			t.Fatalf("delivery %d: got %d of 3", want, got)
		}
	}
	fetch(1)
	for round := uint64(2); round <= 3; round++ {
		for _, subj := range []string{"$JS.API.STREAM.LEADER.STEPDOWN.PROBE32", "$JS.API.CONSUMER.LEADER.STEPDOWN.PROBE32.C"} {
			if _, err := e.NC.Request(subj, nil, 5*time.Second); err != nil {
				t.Fatalf("%s: %v", subj, err)
			}
		}
		time.Sleep(3 * time.Second) // new leaders elected, ack wait passed
		fetch(round)
	}
}
