package dispatch

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// heldMsg is a pulled message reduced to what a keyed batcher needs of it
// while it waits in its key's group (batch_keyed.go, admit): its body,
// subject and headers, for the batch's parse, a retry's copy and a dead
// letter, and its reply subject, which is its ack handle. A keyed batcher
// holds thousands of messages (hold), and the client's message weighs
// about 700 bytes beside its body, most of it the header map it parses
// for each one (issue 20: memory per held event bounds how much a
// request carries). The headers are kept as the strings the client cut
// them into, the map built again when asked for, which a held message
// is a few times in its life (a send, a dead letter), not per event
// routed.
//
// Settling it is what the client does for a JetStream message (jetstream's
// jetStreamMsg.ackReply): the same bodies published to the reply subject,
// and after an Ack, Nak or Term any further one refused.
type heldMsg struct {
	nc      *nats.Conn
	subject string
	reply   string
	header  []string // key, value, key, value, ... in the map's order
	data    []byte
	ackd    atomic.Bool
}

// holdMsg reduces msg to a heldMsg; nc is the connection it came on.
func holdMsg(nc *nats.Conn, msg jetstream.Msg) *heldMsg {
	h := &heldMsg{nc: nc, subject: msg.Subject(), reply: msg.Reply(), data: msg.Data()}
	if hdr := msg.Headers(); len(hdr) > 0 {
		n := 0
		for _, vals := range hdr {
			n += 2 * len(vals)
		}
		h.header = make([]string, 0, n)
		for k, vals := range hdr {
			for _, v := range vals {
				h.header = append(h.header, k, v)
			}
		}
	}
	return h
}

func (h *heldMsg) Data() []byte    { return h.data }
func (h *heldMsg) Subject() string { return h.subject }
func (h *heldMsg) Reply() string   { return h.reply }

// Headers builds the message's headers again: a map of its own each time,
// which the caller may change.
func (h *heldMsg) Headers() nats.Header {
	if h.header == nil {
		return nil
	}
	out := make(nats.Header, len(h.header)/2)
	for i := 0; i+1 < len(h.header); i += 2 {
		out[h.header[i]] = append(out[h.header[i]], h.header[i+1])
	}
	return out
}

// Metadata parses the reply subject, as the client does (v1 and v2 forms:
// $JS.ACK.[<domain>.<account hash>.]<stream>.<consumer>.<delivered>.<stream
// seq>.<consumer seq>.<time>.<pending>[.<token>]).
func (h *heldMsg) Metadata() (*jetstream.MsgMetadata, error) {
	t := strings.Split(h.reply, ".")
	if len(t) < 2 || t[0] != "$JS" || t[1] != "ACK" || len(t) != 9 && len(t) < 11 {
		return nil, fmt.Errorf("%w: %q", jetstream.ErrNotJSMessage, h.reply)
	}
	var domain string
	if len(t) == 9 {
		t = t[2:]
	} else {
		domain = t[2]
		if domain == "_" {
			domain = ""
		}
		t = t[4:]
	}
	num := func(s string) uint64 { n, _ := strconv.ParseUint(s, 10, 64); return n }
	meta := &jetstream.MsgMetadata{
		Domain: domain, Stream: t[0], Consumer: t[1],
		NumDelivered: num(t[2]), NumPending: num(t[6]),
		Timestamp: time.Unix(0, int64(num(t[5]))),
	}
	meta.Sequence.Stream, meta.Sequence.Consumer = num(t[3]), num(t[4])
	return meta, nil
}

func (h *heldMsg) Ack() error { return h.settle(context.Background(), "+ACK", false) }

func (h *heldMsg) DoubleAck(ctx context.Context) error { return h.settle(ctx, "+ACK", true) }

func (h *heldMsg) Nak() error { return h.settle(context.Background(), "-NAK", false) }

func (h *heldMsg) NakWithDelay(d time.Duration) error {
	if d <= 0 {
		return h.Nak()
	}
	return h.settle(context.Background(), fmt.Sprintf("-NAK {\"delay\": %d}", d.Nanoseconds()), false)
}

// InProgress may be sent any number of times, until the message is settled.
func (h *heldMsg) InProgress() error {
	if h.ackd.Load() {
		return jetstream.ErrMsgAlreadyAckd
	}
	return h.nc.Publish(h.reply, []byte("+WPI"))
}

func (h *heldMsg) Term() error { return h.settle(context.Background(), "+TERM", false) }

func (h *heldMsg) TermWithReason(reason string) error {
	if reason == "" {
		return h.Term()
	}
	return h.settle(context.Background(), "+TERM "+reason, false)
}

// settle sends body to the reply subject (and waits for the server's
// answer if sync), once.
func (h *heldMsg) settle(ctx context.Context, body string, sync bool) error {
	if h.reply == "" {
		return jetstream.ErrMsgNoReply
	}
	if h.ackd.Load() {
		return jetstream.ErrMsgAlreadyAckd
	}
	var err error
	if sync {
		if _, ok := ctx.Deadline(); !ok {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, 5*time.Second) // the client's default wait
			defer cancel()
		}
		_, err = h.nc.RequestWithContext(ctx, h.reply, []byte(body))
	} else {
		err = h.nc.Publish(h.reply, []byte(body))
	}
	if err != nil {
		return err
	}
	h.ackd.Store(true)
	return nil
}
