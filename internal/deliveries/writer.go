package deliveries

import (
	"encoding/json"
	"sync/atomic"

	"github.com/nats-io/nats.go"
)

// publisher is the one call a Writer makes: *nats.Conn's.
type publisher interface {
	PublishMsg(*nats.Msg) error
}

// Writer records deliveries. Recording never waits on the broker and never
// fails or slows a delivery beyond a marshal and a buffered write: a record
// is a plain publish, which the deliveries stream stores like any message
// on its subjects, with no JetStream acknowledgement to wait for (as the
// acks beside it). A record lost (the connection down, a leader change)
// costs a lookup its detail, never an event: the event, its retries and
// its dead letter are stored and acknowledged as before.
type Writer struct {
	pub    publisher
	prefix string
	failed atomic.Int64
}

// NewWriter records under prefix (streams.subject_prefix) through pub.
func NewWriter(pub publisher, prefix string) *Writer {
	return &Writer{pub: pub, prefix: prefix}
}

// Record stores r as its delivery's latest state.
func (w *Writer) Record(r Record) {
	if w == nil {
		return
	}
	b, err := json.Marshal(r)
	if err == nil {
		err = w.pub.PublishMsg(&nats.Msg{Subject: Subject(w.prefix, r.EventID), Data: b})
	}
	if err != nil {
		w.failed.Add(1)
	}
}

// Failed is how many records could not be published.
func (w *Writer) Failed() int64 {
	if w == nil {
		return 0
	}
	return w.failed.Load()
}
