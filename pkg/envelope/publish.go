package envelope

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// DefaultSubjectPrefix roots Chapar's subjects unless configured otherwise.
const DefaultSubjectPrefix = "chapar"

// Subject is where an event of the given type is published under prefix:
// <prefix>.events.<type without "chapar.">, e.g. chapar.events.track.
func Subject(prefix, eventType string) string {
	return prefix + ".events." + strings.TrimPrefix(eventType, "chapar.")
}

// Publisher publishes envelopes to JetStream and waits for the ack.
type Publisher struct {
	js       jetstream.JetStream
	prefix   string
	maxBytes int
	// partitions is streams.partitions of the dispatchers' config: the
	// envelope's PartitionKey chooses one of them.
	partitions int
}

// PublisherOption adjusts a Publisher.
type PublisherOption func(*Publisher)

// WithSubjectPrefix publishes under a prefix other than "chapar".
func WithSubjectPrefix(p string) PublisherOption { return func(pub *Publisher) { pub.prefix = p } }

// WithPartitions publishes over n partitions (streams.partitions in the
// dispatchers' config; 1, the default, is the layout without partitions).
// It must match the config: an event published for another count lands in
// a partition no dispatcher reads, or is refused when no stream has its
// subject.
func WithPartitions(n int) PublisherOption { return func(pub *Publisher) { pub.partitions = n } }

// WithMaxBytes changes the size limit checked before publishing.
func WithMaxBytes(n int) PublisherOption { return func(pub *Publisher) { pub.maxBytes = n } }

// NewPublisher publishes through js.
func NewPublisher(js jetstream.JetStream, opts ...PublisherOption) *Publisher {
	p := &Publisher{js: js, prefix: DefaultSubjectPrefix, maxBytes: DefaultMaxBytes, partitions: 1}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Publish validates env and publishes it in structured mode with its id as
// Nats-Msg-Id, so retrying a publish whose ack was lost is safe: JetStream
// drops the duplicate (ack.Duplicate reports it).
func (p *Publisher) Publish(ctx context.Context, env *Envelope) (*jetstream.PubAck, error) {
	raw, err := env.Marshal()
	if err != nil {
		return nil, err
	}
	if _, err := Parse(raw, p.maxBytes); err != nil {
		return nil, err
	}
	return p.PublishRaw(ctx, env, raw)
}

// Subject is where env is published: its type's subject, in the partition
// its PartitionKey chooses; an envelope with destinations goes to the
// direct subject of its type instead (SubjectOf), which every sink's
// consumer reads whatever its routes.
func (p *Publisher) Subject(env *Envelope) string {
	return SubjectOf(p.prefix, env, p.partitions)
}

// PublishRaw publishes raw, the structured-mode encoding of env (env
// supplies the type, the id and the partition key), without validating it.
func (p *Publisher) PublishRaw(ctx context.Context, env *Envelope, raw []byte) (*jetstream.PubAck, error) {
	msg := nats.NewMsg(p.Subject(env))
	msg.Header.Set("Content-Type", ContentTypeCloudEvents)
	msg.Data = raw
	ack, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(env.ID))
	if err != nil {
		return nil, fmt.Errorf("envelope: publish %s: %w", env.ID, err)
	}
	return ack, nil
}
