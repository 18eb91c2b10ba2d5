package config_test

import (
	"strings"
	"testing"
	"time"
)

// sinks[].start: new (or absent) or an RFC 3339 time in the past; anything
// else is refused with the key named.
func TestSinkStart(t *testing.T) {
	tests := []struct {
		name, yaml string
		want       time.Time
		err        string
	}{
		{"absent", "", time.Time{}, ""},
		{"new", "    start: new", time.Time{}, ""},
		{"a time", "    start: 2026-01-02T15:04:05Z", time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC), ""},
		{"a date alone", "    start: 2026-01-02", time.Time{}, "sinks[0].start: is \"2026-01-02\"; it must be new"},
		{"a word", "    start: oldest", time.Time{}, "sinks[0].start: is \"oldest\"; it must be new"},
		{"the future", "    start: 2999-01-01T00:00:00Z", time.Time{}, "sinks[0].start: is 2999-01-01T00:00:00Z, in the future"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseOrder(t, tt.yaml)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := cfg.Sinks[0].StartTime(); !got.Equal(tt.want) {
				t.Errorf("start %v, want %v", got, tt.want)
			}
		})
	}
}
