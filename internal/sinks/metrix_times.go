package sinks

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"slices"
)

// Metrix gateway times. Metrix drops a second message of one user with the
// same time after answering 2xx (vendor digest, section 3), and its time is
// an integer of milliseconds (a "Long", docs.metrix.ir troubleshooting):
// no finer digits to break a tie with. So every message Chapar sends for
// one user must take a millisecond none of that user's other messages has,
// whichever request, batch, retry, replay or replica sends it.
//
// No function of one event alone can do that at millisecond resolution
// without reordering: k events of a user at millisecond T and one at T+1
// need k+1 distinct milliseconds in that order, so the one at T+1 must go
// to T+k or later, and it cannot know k. A per-event rule (the event's time
// plus its stream sequence modulo some width, say) either collides or
// reorders once the width is exceeded or the sequence wraps. So the
// milliseconds a user's messages took are kept, per user, in a shared
// record (a JetStream key-value entry, metrix_times_kv.go), and each new
// message takes a free one, changed by compare-and-set: a reservation per
// request, not per message, and two replicas racing for one user retry.
//
// The record holds, per message, the millisecond it took and its place in
// the user's order: (wanted ms, receipt time, envelope id). A new message
// takes the free millisecond nearest above its wanted time that lies
// between the milliseconds of the user's messages before and after it in
// that order (nearest below if none above); only if there is none (a burst
// arriving out of order, larger than the gap it falls in) does it take the
// nearest free one above, keeping the times distinct at the cost of order.
// An auto-registration user message takes the latest free millisecond
// below its event's. A message already in the record (a retry, a bisected
// batch, a replay) takes its millisecond again.

// metrixSlot is one message of a user in the record.
type metrixSlot struct {
	At   int64 // the millisecond it was given
	Want int64 // the event's time (or receipt time), ms
	Recv int64 // the receipt time, ns: orders a user's events within one ms
	ID   uint64
	Kind uint8 // metrixKindRegister sorts before the event's own message
}

const (
	metrixKindRegister uint8 = iota // auto-registration user message
	metrixKindMessage               // the event's own message
)

// before reports whether a comes before b in the user's order.
func (a metrixSlot) before(b metrixSlot) bool {
	if a.Want != b.Want {
		return a.Want < b.Want
	}
	if a.Recv != b.Recv {
		return a.Recv < b.Recv
	}
	if a.ID != b.ID {
		return a.ID < b.ID
	}
	return a.Kind < b.Kind
}

// metrixSlots is one user's record.
type metrixSlots []metrixSlot

// Bounds of a record: a message older than metrixSlotsHorizon before the
// user's newest, or beyond the newest metrixSlotsMax, is forgotten. A
// message is only at risk from a forgotten one if it wants a millisecond
// that far back (a producer's time more than a horizon late).
const (
	metrixSlotsMax     = 256
	metrixSlotsHorizon = int64(10 * 60 * 1000) // 10 min, in ms
)

// metrixIDHash names a message in the record.
func metrixIDHash(id string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(id))
	return h.Sum64()
}

// metrixBook is a user's record being written by one reservation: its
// messages, and the milliseconds they use, indexed once for all the
// request's messages (a map made per message was most of a reservation's
// CPU with a full record).
type metrixBook struct {
	slots metrixSlots
	// used and taken index slots: the milliseconds used, and the
	// millisecond of each message by name. Nil until the first message.
	used  map[int64]bool
	taken map[metrixName]int64
}

// metrixName is what names a message in a record.
type metrixName struct {
	id   uint64
	kind uint8
}

func (s metrixSlot) name() metrixName { return metrixName{s.ID, s.Kind} }

func (b *metrixBook) index() {
	if b.used != nil {
		return
	}
	b.used = make(map[int64]bool, len(b.slots)+16)
	b.taken = make(map[metrixName]int64, len(b.slots)+16)
	for _, x := range b.slots {
		b.used[x.At] = true
		b.taken[x.name()] = x.At
	}
}

// find is the millisecond a message seen before took.
func (b *metrixBook) find(s metrixSlot) (int64, bool) {
	b.index()
	at, ok := b.taken[s.name()]
	return at, ok
}

// record adds s, given its millisecond at.
func (b *metrixBook) record(s metrixSlot, at int64) int64 {
	s.At = at
	b.slots = append(b.slots, s)
	b.used[at] = true
	b.taken[s.name()] = at
	return at
}

// take gives message s its millisecond (see the file comment) and records
// it. Only the users' own messages bound it, not registrations: those may
// sit anywhere below their own message (registerBelow).
func (b *metrixBook) take(s metrixSlot) int64 {
	if at, ok := b.find(s); ok {
		return at
	}
	lo, hi := int64(minInt64), int64(maxInt64) // from the neighbours in order
	for _, x := range b.slots {
		if x.Kind != metrixKindMessage {
			continue
		}
		if x.before(s) {
			lo = max(lo, x.At+1)
		} else {
			hi = min(hi, x.At-1)
		}
	}
	used := b.used
	// The nearest free millisecond at or above the wanted one, within
	// bounds; else the nearest below it, within bounds.
	for t := max(s.Want, lo); t <= hi; t++ {
		if !used[t] {
			return b.record(s, t)
		}
	}
	for t := min(s.Want, hi); t >= lo && t > s.Want-metrixSlotsHorizon; t-- {
		if !used[t] {
			return b.record(s, t)
		}
	}
	// No room in order: distinct, out of order.
	return b.record(s, firstFree(used, s.Want))
}

// registerBelow gives the auto-registration message s the latest free
// millisecond before below (its event's message), and records it. A user
// registered earlier than need be is registered all the same, so it does
// not push the event's own message later.
func (b *metrixBook) registerBelow(s metrixSlot, below int64) int64 {
	if at, ok := b.find(s); ok {
		return at
	}
	used := b.used
	for t := below - 1; t > below-metrixSlotsHorizon; t-- {
		if !used[t] {
			return b.record(s, t)
		}
	}
	return b.record(s, firstFree(used, below))
}

func firstFree(used map[int64]bool, from int64) int64 {
	for t := from; ; t++ {
		if !used[t] {
			return t
		}
	}
}

// merge adds o's messages that r lacks. A request names one user in
// most cases, so r is empty: a copy. Else what r has is indexed once (a
// search of r per message of o was quadratic: most of a reservation's CPU
// with two full records).
func (r *metrixSlots) merge(o metrixSlots) {
	if len(*r) == 0 {
		*r = append(metrixSlots(nil), o...)
		return
	}
	have := make(map[metrixName]bool, len(*r))
	for _, x := range *r {
		have[x.name()] = true
	}
	for _, x := range o {
		if !have[x.name()] {
			*r = append(*r, x)
			have[x.name()] = true
		}
	}
}

// written is r as one reservation leaves it: fn gives the request's
// messages their milliseconds (metrixBook), then what is past the bounds
// is forgotten. Both stores write this.
func (r metrixSlots) written(fn func(b *metrixBook)) metrixSlots {
	b := metrixBook{slots: r}
	fn(&b)
	b.slots.trim()
	return b.slots
}

// trim forgets what is past the bounds, the oldest first.
func (r *metrixSlots) trim() {
	s := *r
	slices.SortFunc(s, func(a, b metrixSlot) int {
		switch {
		case a.At < b.At:
			return -1
		case a.At > b.At:
			return 1
		}
		return 0
	})
	if len(s) > metrixSlotsMax {
		s = s[len(s)-metrixSlotsMax:]
	}
	if len(s) > 0 {
		newest := s[len(s)-1].At
		i := 0
		for i < len(s) && s[i].At < newest-metrixSlotsHorizon {
			i++
		}
		s = s[i:]
	}
	*r = s
}

const (
	minInt64 = -1 << 63
	maxInt64 = 1<<63 - 1
)

const metrixSlotBytes = 8 + 8 + 8 + 8 + 1

// encode is the record as stored: a version byte, then each slot.
func (r metrixSlots) encode() []byte {
	b := make([]byte, 1, 1+len(r)*metrixSlotBytes)
	b[0] = 1
	for _, x := range r {
		b = binary.BigEndian.AppendUint64(b, uint64(x.At))
		b = binary.BigEndian.AppendUint64(b, uint64(x.Want))
		b = binary.BigEndian.AppendUint64(b, uint64(x.Recv))
		b = binary.BigEndian.AppendUint64(b, x.ID)
		b = append(b, x.Kind)
	}
	return b
}

var errMetrixSlots = errors.New("metrix times: malformed record")

func decodeMetrixSlots(b []byte) (metrixSlots, error) {
	if len(b) == 0 {
		return nil, nil
	}
	if b[0] != 1 || (len(b)-1)%metrixSlotBytes != 0 {
		return nil, errMetrixSlots
	}
	b = b[1:]
	r := make(metrixSlots, 0, len(b)/metrixSlotBytes)
	for ; len(b) > 0; b = b[metrixSlotBytes:] {
		r = append(r, metrixSlot{
			At:   int64(binary.BigEndian.Uint64(b[0:])),
			Want: int64(binary.BigEndian.Uint64(b[8:])),
			Recv: int64(binary.BigEndian.Uint64(b[16:])),
			ID:   binary.BigEndian.Uint64(b[24:]),
			Kind: b[32],
		})
	}
	return r, nil
}
