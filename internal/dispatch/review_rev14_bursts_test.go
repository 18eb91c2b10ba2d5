package dispatch_test

import "testing"

// The rev13 purge with bursty live traffic on the other partition: each
// burst's word refreshes the collector-wide behindUntil, and the purged
// partition's stale flag keeps nBehind at 1 after the burst is caught up.
//
// Red on 0666fc4: trickle 1.00 events per request (75 of 75 requests one
// event) after the purge, 5.77 after a backlog that drained.
func TestRev14PurgedPartitionWithBurstyLiveTraffic(t *testing.T) {
	base := rev13LiveAfter(t, false, true)
	stuck := rev13LiveAfter(t, true, true)
	if stuck < base/2 {
		t.Errorf("trickle traffic went %.2f events per request after a partition's backlog was purged, %.2f after one drained: another partition's bursts keep the purged partition's stale word believed (behindUntil is collector-wide)", stuck, base)
	}
}
