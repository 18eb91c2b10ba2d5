package topology

// Removing a sink: what it holds on the server, and deleting it.

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// ConsumerFootprint is one of a sink's consumers as it stands.
type ConsumerFootprint struct {
	Stream string `json:"stream"`
	Name   string `json:"name"`
	// Pending are stored messages the consumer has not delivered yet,
	// AckPending those delivered and not acknowledged.
	Pending    uint64 `json:"pending"`
	AckPending int    `json:"ack_pending"`
	// Waiting are pull requests outstanding: a dispatcher consuming.
	Waiting int `json:"waiting"`
}

// SinkFootprint is what a sink holds on the server: its consumers and the
// retries waiting for it. Its dead letters are not counted here: removing
// a sink keeps them.
type SinkFootprint struct {
	Sink      string              `json:"sink"`
	Consumers []ConsumerFootprint `json:"consumers"`
	// Retries are scheduled retries waiting for their time, and due
	// retries and replays not yet taken, in the retries stream.
	Retries uint64 `json:"retries"`
	// Floors are the ack floors recorded for its events consumers
	// (floors.go): left behind, a sink added again under the name would
	// resume from them instead of starting as a new sink.
	Floors int `json:"floors"`
	// Lead says its events consumers are marked a lead (LeadMetadata).
	Lead bool `json:"lead,omitempty"`
}

// Exists says whether anything of the sink is on the server.
func (f SinkFootprint) Exists() bool { return len(f.Consumers) > 0 || f.Retries > 0 || f.Floors > 0 }

// Consuming names the consumers a dispatcher is pulling from.
func (f SinkFootprint) Consuming() []string {
	var out []string
	for _, c := range f.Consumers {
		if c.Waiting > 0 {
			out = append(out, c.Stream+"/"+c.Name)
		}
	}
	return out
}

// sinkConsumers are every consumer a sink can have: its events consumer on
// each partition's stream, and its retries.
func (t Topology) sinkConsumers(sink string) [][2]string {
	var out [][2]string
	for _, s := range t.EventsStreams() {
		out = append(out, [2]string{s, SinkConsumer(sink)})
	}
	return append(out, [2]string{t.RetriesStream(), RetryConsumer(sink)})
}

// retrySubjects hold a sink's waiting retries and its due ones.
func (t Topology) retrySubjects(sink string) []string {
	return []string{t.prefix + ".retry.wait." + sink + ".>", t.RetryDueSubject(sink)}
}

// Footprint reads what a sink holds on the server.
func (t Topology) Footprint(ctx context.Context, js jetstream.JetStream, sink string) (SinkFootprint, error) {
	f := SinkFootprint{Sink: sink}
	for _, sc := range t.sinkConsumers(sink) {
		c, err := js.Consumer(ctx, sc[0], sc[1])
		if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrStreamNotFound) {
			continue
		}
		if err != nil {
			return f, fmt.Errorf("topology: consumer %s on %s: %w", sc[1], sc[0], err)
		}
		info := c.CachedInfo()
		f.Lead = f.Lead || (sc[0] != t.RetriesStream() && IsLead(info))
		f.Consumers = append(f.Consumers, ConsumerFootprint{Stream: sc[0], Name: sc[1],
			Pending: info.NumPending, AckPending: info.NumAckPending, Waiting: info.NumWaiting})
	}
	floors, err := t.countFloors(ctx, js, sink)
	if err != nil {
		return f, err
	}
	f.Floors = floors
	st, err := js.Stream(ctx, t.RetriesStream())
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("topology: %s: %w", t.RetriesStream(), err)
	}
	for _, subj := range t.retrySubjects(sink) {
		info, err := st.Info(ctx, jetstream.WithSubjectFilter(subj))
		if err != nil {
			return f, fmt.Errorf("topology: count %s: %w", subj, err)
		}
		for _, n := range info.State.Subjects {
			f.Retries += n
		}
	}
	return f, nil
}

// RemoveSink deletes a sink's consumers and its waiting retries, and
// returns what it dropped. Its dead letters stay. The consumers go first:
// from then on a replay to the sink is refused (it is unknown) and events
// naming it are dead-lettered as unknown_destination, so nothing new
// reaches its retries before they are purged. The caller makes sure no
// dispatcher runs the sink any more (one would create it again, from new
// events).
func (t Topology) RemoveSink(ctx context.Context, js jetstream.JetStream, sink string) (SinkFootprint, error) {
	f, err := t.Footprint(ctx, js, sink)
	if err != nil {
		return f, err
	}
	for _, c := range f.Consumers {
		if err := js.DeleteConsumer(ctx, c.Stream, c.Name); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return f, fmt.Errorf("topology: delete consumer %s on %s: %w", c.Name, c.Stream, err)
		}
	}
	// Its floors too: added again later, it is a new sink (floors.go).
	if err := t.DeleteFloors(ctx, js, sink); err != nil {
		return f, err
	}
	// And its pauses: added again, it starts unpaused.
	if err := t.DeletePauses(ctx, js, sink); err != nil {
		return f, err
	}
	if f.Retries == 0 {
		return f, nil
	}
	st, err := js.Stream(ctx, t.RetriesStream())
	if err != nil {
		return f, fmt.Errorf("topology: %s: %w", t.RetriesStream(), err)
	}
	for _, subj := range t.retrySubjects(sink) {
		if err := st.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
			return f, fmt.Errorf("topology: purge %s: %w", subj, err)
		}
	}
	return f, nil
}
