package dlq

import "github.com/nats-io/nats.go"

// MsgOf is the message Writer.Write stores for r, for tests that fill the
// stream faster than one confirmed write at a time.
func (w *Writer) MsgOf(r *Record) *nats.Msg {
	return r.toMsg(w.topo.DeadLetterRecordSubject(r.Sink, r.Key()))
}
