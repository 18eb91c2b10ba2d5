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
}

// PublisherOption adjusts a Publisher.
type PublisherOption func(*Publisher)

// WithSubjectPrefix publishes under a prefix other than "chapar".
func WithSubjectPrefix(p string) PublisherOption { return func(pub *Publisher) { pub.prefix = p } }

// WithMaxBytes changes the size limit checked before publishing.
func WithMaxBytes(n int) PublisherOption { return func(pub *Publisher) { pub.maxBytes = n } }

// NewPublisher publishes through js.
func NewPublisher(js jetstream.JetStream, opts ...PublisherOption) *Publisher {
	p := &Publisher{js: js, prefix: DefaultSubjectPrefix, maxBytes: DefaultMaxBytes}
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
	return p.PublishRaw(ctx, env.Type, env.ID, raw)
}

// PublishRaw publishes an already encoded structured-mode envelope.
func (p *Publisher) PublishRaw(ctx context.Context, eventType, id string, raw []byte) (*jetstream.PubAck, error) {
	msg := nats.NewMsg(Subject(p.prefix, eventType))
	msg.Header.Set("Content-Type", ContentTypeCloudEvents)
	msg.Data = raw
	ack, err := p.js.PublishMsg(ctx, msg, jetstream.WithMsgID(id))
	if err != nil {
		return nil, fmt.Errorf("envelope: publish %s: %w", id, err)
	}
	return ack, nil
}
