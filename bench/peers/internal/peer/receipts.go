package peer

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"time"
)

// Receipt is what a ceiling peer records for each message it finishes:
// the bench reads the file after the peer exits and judges it as it
// judges the vendor's receipts (every event exactly once).
type Receipt struct {
	Sink   int
	Seq    int   // the event's benchSeq (probes are negative)
	SentAt int64 // the publisher's stamp, Unix ns
	At     int64 // when the peer finished it, Unix ns
}

// Stamp reads benchSeq and sentAt from a bench envelope without decoding
// it: json.Marshal writes the properties as "benchSeq":<n> and
// "sentAt":"<ns>". A scan costs a fraction of a microsecond, so a ceiling
// that has no other reason to look into the message is not slowed by it.
func Stamp(raw []byte) (seq int, sentAt int64, ok bool) {
	num := func(key string) ([]byte, bool) {
		i := bytes.Index(raw, []byte(key))
		if i < 0 {
			return nil, false
		}
		rest := raw[i+len(key):]
		j := 0
		for j < len(rest) && (rest[j] == '-' || rest[j] >= '0' && rest[j] <= '9') {
			j++
		}
		return rest[:j], j > 0
	}
	s, ok1 := num(`"benchSeq":`)
	t, ok2 := num(`"sentAt":"`)
	if !ok1 || !ok2 {
		return 0, 0, false
	}
	n, err1 := strconv.Atoi(string(s))
	at, err2 := strconv.ParseInt(string(t), 10, 64)
	return n, at, err1 == nil && err2 == nil
}

// Receipts collects receipts, one slice per worker (no lock on the path
// being measured), and writes them when the peer exits.
type Receipts struct {
	perWorker [][]Receipt
}

// NewReceipts has room for workers writers.
func NewReceipts(workers int) *Receipts { return &Receipts{perWorker: make([][]Receipt, workers)} }

// Add records a receipt for worker w (each worker its own slot).
func (r *Receipts) Add(w, sink int, raw []byte) {
	seq, sent, ok := Stamp(raw)
	if !ok {
		seq = -1 << 30 // not a bench event: the bench reports it
	}
	r.perWorker[w] = append(r.perWorker[w], Receipt{Sink: sink, Seq: seq, SentAt: sent, At: time.Now().UnixNano()})
}

// Write writes every receipt to path, one "sink seq sentAt at" line each.
// Call it once every worker has returned.
func (r *Receipts) Write(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	for _, rs := range r.perWorker {
		for _, x := range rs {
			fmt.Fprintf(w, "%d %d %d %d\n", x.Sink, x.Seq, x.SentAt, x.At)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
