package topology

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

func TestUnreportedIsTheMakersToReportUntilItIsStale(t *testing.T) {
	made := time.Date(2026, 12, 7, 21, 0, 0, 0, time.UTC)
	mark := func(r Restored) string {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	floorLoss := mark(Restored{Plan: LostFromFloor, From: 4, Gone: 2, By: "a"})
	tests := []struct {
		name     string
		metadata map[string]string
		age      time.Duration // of the consumer when read
		by       string
		want     *Restored
	}{
		{"no mark", nil, time.Second, "a", nil},
		{"the maker's own, cut before it cleared it", map[string]string{LostUnreportedMetadata: floorLoss}, time.Second, "a",
			&Restored{Stream: "S", Plan: LostFromFloor, From: 4, Gone: 2, By: "a", Instance: made}},
		{"another's, its maker still binding", map[string]string{LostUnreportedMetadata: floorLoss}, time.Second, "b", nil},
		{"another's, left past the patience: its maker stopped", map[string]string{LostUnreportedMetadata: floorLoss}, lostReportPatience, "b",
			&Restored{Stream: "S", Plan: LostFromFloor, From: 4, Gone: 2, By: "a", Instance: made}},
		{"from sinks[].start, named before makers were", map[string]string{LostUnreportedMetadata: "from_start"}, time.Second, "b",
			&Restored{Stream: "S", Plan: LostFromStart, Instance: made}},
		{"unreadable: still a loss", map[string]string{LostUnreportedMetadata: "{"}, time.Second, "b",
			&Restored{Stream: "S", Plan: LostFromFloor, Instance: made}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			info := &jetstream.ConsumerInfo{Created: made, TimeStamp: made.Add(tt.age), Config: jetstream.ConsumerConfig{Metadata: tt.metadata}}
			got := unreported("S", info, tt.by)
			switch {
			case got == nil && tt.want == nil:
			case got == nil || tt.want == nil:
				t.Fatalf("unreported = %+v, want %+v", got, tt.want)
			case *got != *tt.want:
				t.Fatalf("unreported = %+v, want %+v", *got, *tt.want)
			}
		})
	}
}
