// Package freeport picks loopback ports for tests' servers and processes
// that listen on a port chosen before they start, and keep it across
// restarts (a cluster node's route port, a replica's admin port).
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// handedOut is every port Port has returned in this process: its check's
// listener is closed when it returns, so without it a later call could
// pick a port an earlier caller has not listened on yet (a cluster's
// route ports are all chosen before its first node starts).
var (
	mu        sync.Mutex
	handedOut = map[int]bool{}
)

// Port returns a free loopback port below the kernel's ephemeral range.
// A port from :0 is in that range, and between its choice and its listen
// (or while its process was down) any bind to :0 or outgoing connection
// could be given it: a test cluster's third node found its route port
// taken by the first node's client listener, and waited a minute for a
// listener it could not open; a restarted replica found its admin port in
// use. Checked free when chosen, and never handed out twice in a process;
// from :0 if the range leaves no room. (Another process, say another
// package's tests, may still pick it before its server listens.)
func Port(t testing.TB) int {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if lo := ephemeralLow(); lo > 10000 {
		for range 100 {
			p := 10000 + rand.IntN(lo-10000)
			if handedOut[p] {
				continue
			}
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err == nil {
				_ = l.Close()
				handedOut[p] = true
				return p
			}
		}
	}
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		_ = l.Close()
		if !handedOut[p] {
			handedOut[p] = true
			return p
		}
	}
	t.Fatal("freeport: no free loopback port not handed out already")
	return 0
}

// Addr is Port as a loopback address, host:port.
func Addr(t testing.TB) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", Port(t))
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// ip_local_port_range), 32768 where it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 32768
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 32768
	}
	lo, err := strconv.Atoi(f[0])
	if err != nil {
		return 32768
	}
	return lo
}
