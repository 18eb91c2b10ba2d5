package topology

import "testing"

// What a start does with a sink's events consumer it finds missing.
func TestDecideLost(t *testing.T) {
	tests := []struct {
		name  string
		facts LostFacts
		want  LostPlan
	}{
		{"a floor on this stream: resume above it", LostFacts{FloorFound: true, Tracked: true, HasRetries: true}, LostFromFloor},
		{"a floor, the retries consumer lost too", LostFacts{FloorFound: true, Tracked: true}, LostFromFloor},
		{"a floor wins over sinks[].start", LostFacts{FloorFound: true, Tracked: true, HasRetries: true, HasStart: true}, LostFromFloor},
		{"nothing of it: a new sink", LostFacts{}, LostNew},
		{"a new sink with a start", LostFacts{HasStart: true}, LostNew},
		{"floors on other partitions, no retries consumer: being created by another dispatcher", LostFacts{Tracked: true}, LostNew},
		{"floors on other streams only: a stream it never had a consumer on", LostFacts{Tracked: true, HasRetries: true}, LostFromFirst},
		{"not new, no floor, a start: the operator's", LostFacts{HasRetries: true, HasStart: true}, LostFromStart},
		{"not new, no floor, no start: unknown", LostFacts{HasRetries: true}, LostUnknown},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := DecideLost(tt.facts); got != tt.want {
				t.Errorf("DecideLost(%+v) = %d, want %d", tt.facts, got, tt.want)
			}
		})
	}
}
