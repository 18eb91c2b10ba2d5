// Package topology is Chapar's JetStream layout in one place: the streams,
// their subjects and the durable consumers every dispatcher process shares.
//
//	<P>.events.>          EVENTS stream (limits, file): what producers publish,
//	                      de-duplicated on Nats-Msg-Id = envelope id.
//	                      Consumer "router": validates and fans out.
//	<P>.deliver.<sink>    DELIVERIES stream (work queue): one message per
//	                      (event, sink), de-duplicated on <id>/<sink>.
//	                      Consumer "sink-<sink>" per sink: delivers to the vendor.
//	<P>.dlq.<sink>        DLQ stream (limits): one dead letter per (event, sink),
//	                      the original envelope plus why.
//
// Each sink has its own consumer, so a slow or dead vendor holds back only
// its own queue, and a retry or replay for one sink never re-sends to the
// others. Consumers are durable and shared: N dispatchers split the work.
package topology

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Header names Chapar adds to the messages it moves.
const (
	HeaderReceived = "Chapar-Received" // when the router accepted the event (RFC 3339)
	HeaderReplays  = "Chapar-Replays"  // how many times a dead letter was replayed
)

// RouterConsumer is the durable consumer that fans events out to sinks.
const RouterConsumer = "router"

// headerAllowance is room for headers on top of the envelope's own bytes.
const headerAllowance = 16 << 10

// Topology names the streams and subjects under one subject prefix.
type Topology struct {
	prefix string
	stream string // stream name prefix, e.g. CHAPAR
	cfg    config.Streams
}

// New derives the layout from the streams config.
func New(cfg config.Streams) Topology {
	return Topology{
		prefix: cfg.SubjectPrefix,
		stream: strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(cfg.SubjectPrefix)),
		cfg:    cfg,
	}
}

// Streams of the layout.
func (t Topology) EventsStream() string       { return t.stream + "_EVENTS" }
func (t Topology) DeliveriesStream() string   { return t.stream + "_DELIVERIES" }
func (t Topology) DeadLetterStream() string   { return t.stream + "_DLQ" }
func (t Topology) MaxEnvelopeBytes() int      { return t.cfg.MaxEnvelopeBytes }
func (t Topology) EventsSubjects() string     { return t.prefix + ".events.>" }
func (t Topology) DeadLetterSubjects() string { return t.prefix + ".dlq.>" }

// EventSubject is where a producer publishes an event of the given type.
func (t Topology) EventSubject(eventType string) string {
	return envelope.Subject(t.prefix, eventType)
}

// Prefix is the subject prefix.
func (t Topology) Prefix() string { return t.prefix }

// DeliverSubject carries one sink's deliveries.
func (t Topology) DeliverSubject(sink string) string { return t.prefix + ".deliver." + sink }

// DeadLetterSubject carries one sink's dead letters ("-" for envelopes that
// never reached a sink).
func (t Topology) DeadLetterSubject(sink string) string { return t.prefix + ".dlq." + sink }

// SinkConsumer is the durable consumer of a sink.
func SinkConsumer(sink string) string { return "sink-" + sink }

// DeliveryMsgID de-duplicates the router's fan-out: a router redelivery
// publishes the same (event, sink) again and JetStream drops it.
func DeliveryMsgID(eventID, sink string) string { return eventID + "/" + sink }

// ConsumerSettings tune the durable consumers.
type ConsumerSettings struct {
	AckWait       time.Duration
	MaxAckPending int
	// MaxDeliver is JetStream's own bound on deliveries; the retry policy
	// normally decides first (it is the safety net, -1 for none).
	MaxDeliver int
}

// Ensure creates or updates the three streams and the router consumer. It
// is idempotent, so every dispatcher runs it at start.
func (t Topology) Ensure(ctx context.Context, js jetstream.JetStream, router ConsumerSettings) error {
	storage := jetstream.FileStorage
	if t.cfg.Storage == "memory" {
		storage = jetstream.MemoryStorage
	}
	streams := []jetstream.StreamConfig{{
		Name:        t.EventsStream(),
		Description: "Chapar: events as producers published them",
		Subjects:    []string{t.EventsSubjects()},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      t.cfg.MaxAge,
		MaxBytes:    orUnlimited(t.cfg.MaxBytes),
		// Discard new: when full, producers get an error instead of the
		// oldest undelivered events silently vanishing.
		Discard:    jetstream.DiscardNew,
		Duplicates: t.cfg.DuplicateWindow,
		MaxMsgSize: int32(t.cfg.MaxEnvelopeBytes + headerAllowance),
		Storage:    storage,
		Replicas:   t.cfg.Replicas,
	}, {
		Name:        t.DeliveriesStream(),
		Description: "Chapar: one message per (event, sink) awaiting delivery",
		Subjects:    []string{t.prefix + ".deliver.>"},
		Retention:   jetstream.WorkQueuePolicy,
		MaxBytes:    orUnlimited(t.cfg.MaxBytes),
		Discard:     jetstream.DiscardNew,
		Duplicates:  t.cfg.DuplicateWindow,
		MaxMsgSize:  int32(t.cfg.MaxEnvelopeBytes + headerAllowance),
		Storage:     storage,
		Replicas:    t.cfg.Replicas,
	}, {
		Name:        t.DeadLetterStream(),
		Description: "Chapar: dead letters, the original envelope plus why",
		Subjects:    []string{t.DeadLetterSubjects()},
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      t.cfg.DeadLetterMaxAge,
		Discard:     jetstream.DiscardNew,
		Duplicates:  t.cfg.DuplicateWindow,
		Storage:     storage,
		Replicas:    t.cfg.Replicas,
	}}
	for _, sc := range streams {
		if _, err := js.CreateOrUpdateStream(ctx, sc); err != nil {
			return fmt.Errorf("topology: stream %s: %w", sc.Name, err)
		}
	}
	_, err := js.CreateOrUpdateConsumer(ctx, t.EventsStream(), jetstream.ConsumerConfig{
		Durable:       RouterConsumer,
		Description:   "Chapar: validates events and fans them out to sinks",
		FilterSubject: t.EventsSubjects(),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       router.AckWait,
		MaxAckPending: router.MaxAckPending,
		MaxDeliver:    router.MaxDeliver,
		Replicas:      t.cfg.Replicas,
	})
	if err != nil {
		return fmt.Errorf("topology: router consumer: %w", err)
	}
	return nil
}

// EnsureSink creates or updates a sink's durable consumer.
func (t Topology) EnsureSink(ctx context.Context, js jetstream.JetStream, sink string, s ConsumerSettings) (jetstream.Consumer, error) {
	c, err := js.CreateOrUpdateConsumer(ctx, t.DeliveriesStream(), jetstream.ConsumerConfig{
		Durable:       SinkConsumer(sink),
		Description:   "Chapar: delivers to sink " + sink,
		FilterSubject: t.DeliverSubject(sink),
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       s.AckWait,
		MaxAckPending: s.MaxAckPending,
		MaxDeliver:    s.MaxDeliver,
		Replicas:      t.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("topology: consumer of sink %s: %w", sink, err)
	}
	return c, nil
}

func orUnlimited(n int64) int64 {
	if n <= 0 {
		return -1
	}
	return n
}
