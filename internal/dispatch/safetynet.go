package dispatch

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/topology"
)

// maxDeliveriesAdvisory is the part of JetStream's MAX_DELIVERIES advisory
// the safety net reads.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries int    `json:"deliveries"`
}

// watchMaxDeliveries is the safety net behind the retry policy: a message
// that exhausts the consumer's MaxDeliver without the policy dead-lettering
// it (redelivered after crashes or ack timeouts, say) would sit in the work
// queue forever, undelivered. JetStream announces it; one dispatcher of the
// queue group dead-letters it and removes it from the queue.
func (d *Dispatcher) watchMaxDeliveries(ctx context.Context, sink string) (*nats.Subscription, error) {
	stream := d.o.Topology.DeliveriesStream()
	subject := fmt.Sprintf("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.%s.%s", stream, topology.SinkConsumer(sink))
	sub, err := d.js.Conn().QueueSubscribe(subject, "chapar-safety-net", func(m *nats.Msg) {
		var adv maxDeliveriesAdvisory
		if err := json.Unmarshal(m.Data, &adv); err != nil {
			d.log.Error("unreadable MAX_DELIVERIES advisory", zap.Error(err))
			return
		}
		d.rescue(ctx, sink, adv)
	})
	if err != nil {
		return nil, fmt.Errorf("dispatch: watch max deliveries of %s: %w", sink, err)
	}
	return sub, nil
}

func (d *Dispatcher) rescue(ctx context.Context, sink string, adv maxDeliveriesAdvisory) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	s, err := d.js.Stream(ctx, adv.Stream)
	if err != nil {
		d.log.Error("safety net: stream", zap.Error(err))
		return
	}
	m, err := s.GetMsg(ctx, adv.StreamSeq)
	if err != nil {
		// Already handled (acked or removed) by the policy or another replica.
		return
	}
	rec := &dlq.Record{
		Sink: sink, Reason: sinks.ReasonRetriesExhausted, Attempts: adv.Deliveries,
		Error:        fmt.Sprintf("JetStream stopped delivering after %d deliveries (max_deliver)", adv.Deliveries),
		EventID:      eventID(m.Header, m.Data),
		FirstAttempt: m.Time, LastAttempt: time.Now(),
		Header: m.Header, Data: m.Data, Subject: m.Subject,
		OriginStream: adv.Stream, OriginSeq: adv.StreamSeq,
	}
	if err := d.recordDeadLetter(ctx, rec); err != nil {
		return // the delivery stays in its queue, visible, not lost
	}
	if err := s.DeleteMsg(ctx, adv.StreamSeq); err != nil {
		d.log.Warn("safety net: could not remove the delivery", zap.Uint64("seq", adv.StreamSeq), zap.Error(err))
	}
}

// eventID is a message's envelope id, read without validating it: the
// ce-id header in binary mode, else the body's id (if it is a string).
func eventID(h nats.Header, data []byte) string {
	if id := h.Get("ce-id"); id != "" {
		return id
	}
	var probe struct {
		ID any `json:"id"`
	}
	if json.Unmarshal(data, &probe) == nil {
		if s, ok := probe.ID.(string); ok {
			return s
		}
	}
	return ""
}
