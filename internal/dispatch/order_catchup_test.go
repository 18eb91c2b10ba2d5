package dispatch

import (
	"testing"
	"time"
)

// A new pin's catch-up, decided: which lanes may start, up to where, and
// when it is over (order_lease.go).
func TestOrderPinCatchUpDecisions(t *testing.T) {
	// The bound: the older of the last delivered at the first proof and
	// the one before the first delivered here under the pin.
	for _, c := range []struct{ catchTo, firstNew, want uint64 }{
		{0, 0, 0},    // no catch-up
		{0, 7, 0},    // no catch-up, whatever came
		{10, 0, 10},  // nothing new here yet
		{10, 12, 10}, // the first new one came after the proof
		{10, 6, 5},   // new ones came before the proof: 6..10 are this holder's
		{10, 1, 0},   // the stream's first message: nothing was before it
	} {
		if got := catchUpTo(c.catchTo, c.firstNew); got != c.want {
			t.Errorf("catchUpTo(%d, %d) = %d, want %d", c.catchTo, c.firstNew, got, c.want)
		}
	}
	// Lanes: the old holder's messages go, newer ones of a key wait;
	// unkeyed lanes are not ordered.
	for _, c := range []struct {
		to   uint64
		key  string
		head uint64
		want bool
	}{
		{0, "u", 99, true},
		{5, "u", 5, true},
		{5, "u", 6, false},
		{5, "", 6, true},
	} {
		if got := startsInCatchUp(c.to, c.key, c.head); got != c.want {
			t.Errorf("startsInCatchUp(%d, %q, %d) = %v, want %v", c.to, c.key, c.head, got, c.want)
		}
	}
	// Over: the floor reached the bound, or nothing pending; or ack_wait
	// passed and the counts agree. The counts agreeing alone is not
	// enough (a late ack may have made up for a message still out).
	const ackWait = 3 * time.Second
	for _, c := range []struct {
		name    string
		floor   uint64
		pending int
		counted bool
		elapsed time.Duration
		want    bool
	}{
		{"floor short, counts agree, early", 4, 1, true, time.Second, false},
		{"floor reached", 5, 3, false, 0, true},
		{"nothing pending", 0, 0, true, 0, true},
		{"ack_wait passed, counts agree: an old holder may still keep one alive", 4, 1, true, ackWait, false},
		{"patience passed, counts agree", 4, 1, true, catchUpPatience(ackWait), true},
		{"patience passed, one pending elsewhere", 4, 2, false, catchUpPatience(ackWait), false},
	} {
		if got := caughtUp(5, c.floor, c.pending, c.counted, c.elapsed, ackWait); got != c.want {
			t.Errorf("%s: caughtUp = %v, want %v", c.name, got, c.want)
		}
	}
}
