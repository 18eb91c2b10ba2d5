//go:build race

package dispatch

// raceEnabled: the race detector makes sync.Pool drop items at random, so
// allocation counts that rely on a pool are not exact under it.
const raceEnabled = true
