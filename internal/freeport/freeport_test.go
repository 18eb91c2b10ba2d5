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

// Review (rev16): a caller takes several ports before it listens on any
// (testenv's cluster: three route ports, then the nodes; faults' nodes:
// a client and a route port each). Port closes its check's listener, so
// a later call may pick the same port again (1 in ~22,000 per pair on a
// 32768 range: a cluster's two nodes then share a route port, and the
// second's embedded.Start fails, "cannot listen for routes"). Within a
// process no port is handed out twice (red before: about 90 repeats in
// 2,000 calls).
func TestPortNeverHandsOutAPortTwice(t *testing.T) {
	if ephemeralLow() <= 10000 {
		t.Skip("no room below the ephemeral range: ports come from :0")
	}
	seen := map[int]int{}
	repeats := 0
	for i := range 2000 {
		p := Port(t)
		if _, ok := seen[p]; ok {
			repeats++
		}
		seen[p] = i
	}
	if repeats > 0 {
		t.Errorf("%d of 2000 ports from Port were handed out before in this process (a cluster's nodes could share a route port)", repeats)
	}
}
