package deliveries

import (
	"sync"
	"sync/atomic"
)

// publisher is the one call a Writer makes: *nats.Conn's. (Publish, not
// PublishMsg: a record has no header, and a *nats.Msg was an allocation per
// record.)
type publisher interface {
	Publish(subject string, data []byte) error
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
	// bufs hold records being written: the connection copies a message
	// into its own buffer before Publish returns.
	bufs sync.Pool
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
	bp, _ := w.bufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	*bp = r.AppendJSON((*bp)[:0])
	if err := w.pub.Publish(Subject(w.prefix, r.EventID), *bp); err != nil {
		w.failed.Add(1)
	}
	w.bufs.Put(bp)
}

// Failed is how many records could not be published.
func (w *Writer) Failed() int64 {
	if w == nil {
		return 0
	}
	return w.failed.Load()
}
