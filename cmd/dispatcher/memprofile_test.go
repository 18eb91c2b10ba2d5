package main

import "testing"

// The runtime's heap sampling is off unless GODEBUG asks for it: nothing
// in Chapar reads a heap profile, and the sampled stacks' hash table was
// 1.4 MiB of the dispatcher's memory at 256 workers (issue 20).
func TestMemProfileRate(t *testing.T) {
	const runtimeDefault = 512 * 1024
	for _, c := range []struct {
		godebug string
		want    int
	}{
		{"", 0},
		{"http2client=0", 0},
		{"memprofilerate=1", runtimeDefault}, // the runtime read it already
		{"gctrace=1,memprofilerate=4096", runtimeDefault},
	} {
		if got := memProfileRate(c.godebug, runtimeDefault); got != c.want {
			t.Errorf("GODEBUG=%q: MemProfileRate %d; want %d", c.godebug, got, c.want)
		}
	}
}
