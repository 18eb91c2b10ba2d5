package topology

// Which of a config's sinks lead: the sinks whose events consumers read
// every subject so that someone checks what no route's types cover (an
// invalid envelope, an event on a subject its sink does not read) and
// counts what is received and unrouted. The lead is recorded on the
// server (LeadMetadata), not taken from the order of a config: a config
// that puts another sink first would otherwise widen the new first sink
// at its current position and narrow the old one, and what the old one
// had not read yet, outside its own types, would be checked by no one.

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// IsLead reports whether a sink's events consumer carries the lead mark.
func IsLead(info *jetstream.ConsumerInfo) bool {
	_, ok := info.Config.Metadata[LeadMetadata]
	return ok
}

// Leads reads which of sinks are marked leads on the server: a sink is
// marked if any of its events consumers is (a partition's consumer lost
// and recreated from its floor is marked again at the bind). A sink
// without consumers yet is not marked.
func (t Topology) Leads(ctx context.Context, js jetstream.JetStream, sinks []string) (map[string]bool, error) {
	out := map[string]bool{}
	for _, sink := range sinks {
		for _, stream := range t.EventsStreams() {
			c, err := js.Consumer(ctx, stream, SinkConsumer(sink))
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("topology: read whether sink %s leads: consumer %s on %s: %w", sink, SinkConsumer(sink), stream, err)
			}
			if IsLead(c.CachedInfo()) {
				out[sink] = true
				break
			}
		}
	}
	return out, nil
}
