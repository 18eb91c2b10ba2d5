package freeport

import (
	"net"
	"strconv"
	"testing"
)

// A port from Port is free, and below the ephemeral range, from which :0
// binds and outgoing connections take theirs.
func TestPortIsFreeAndBelowTheEphemeralRange(t *testing.T) {
	lo := ephemeralLow()
	for range 20 {
		p := Port(t)
		if lo > 10000 && (p < 10000 || p >= lo) {
			t.Errorf("port %d, want one in [10000, %d)", p, lo)
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d from Port is not free: %v", p, err)
		}
		_ = l.Close()
	}
}
