package dispatch

import (
	"encoding/json"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/topology"
)

// An operator's pause (dispatcher sinks pause NAME, or the console) stops
// a sink in every replica until it is resumed: no request to the vendor,
// nothing dead-lettered, nothing dropped. It is a record in the pauses
// bucket (topology.OperatorPause, under its own key), which the pause
// board reads before the first pull and watches (pause.go), so every
// replica obeys within the watch's latency and one started while the sink
// is paused starts paused. If the watch breaks, the board makes it again
// (with a deadline on its creation) and re-reads every current value:
// meanwhile a replica keeps the state it last knew, paused or not, and a
// resumption or pause written in between applies once the watch is back.
// A watch that dies without a word (its bucket deleted) is found by the
// board's check of the bucket every pausesCheckEvery (pause.go).
//
// What it does is the gate's: shut (gate.setHeld), so
//
//   - the events and retries consumers pull nothing, and hand back at once
//     what they had prefetched (consume.go): retries wait in the retries
//     stream, events in the events stream, durably;
//   - a worker holding a message hands it back without an attempt
//     (errShut); an ordered sink's orderer lets its pin go and hands back
//     what its lanes hold, in stream order (order_pull.go), as when its
//     config is fenced off, so the next replica pinned after the
//     resumption gets them in order;
//   - nothing expires while paused, and time paused does not count
//     against max_elapsed (worker.go, expired).
//
// JetStream's delivery count of a handed-back message grows, but Chapar
// counts its attempts itself (attempts), and the consumers have no
// max_deliver, so a pause charges no event an attempt.

// operatorPause applies a sink's operator pause record read or watched.
func (b *pauseBoard) operatorPause(sink string, e jetstream.KeyValueEntry) {
	apply := b.held[sink]
	if apply == nil {
		return // a sink this replica does not run
	}
	if e.Operation() != jetstream.KeyValuePut {
		apply(topology.OperatorPause{}, e.Revision()) // deleted by hand: not paused
		return
	}
	var p topology.OperatorPause
	if err := json.Unmarshal(e.Value(), &p); err != nil {
		b.log.Warn("unreadable operator pause record; keeping the sink's state as it was",
			zap.String("sink", sink), zap.String("key", e.Key()), zap.Error(err))
		return
	}
	apply(p, e.Revision())
}

// addOperator makes a sink's gate obey its operator pause.
func (b *pauseBoard) addOperator(sink string, g *gate, obs Observer, log *zap.Logger) {
	obs.SinkPaused(sink, false)
	b.held[sink] = func(rec topology.OperatorPause, revision uint64) {
		paused := rec.Paused
		if !g.setHeld(paused, time.Now()) {
			return
		}
		obs.SinkPaused(sink, paused)
		// The record and its revision are the same on every replica: the
		// ops event they make is one for the deployment (opsevents).
		detailsOf(obs).OperatorPaused(sink, rec, revision)
		if paused {
			log.Warn("sink paused by an operator: pulling nothing, delivering nothing until dispatcher sinks resume", zap.String("sink", sink))
		} else {
			log.Info("sink resumed by an operator; consuming", zap.String("sink", sink))
		}
	}
}
