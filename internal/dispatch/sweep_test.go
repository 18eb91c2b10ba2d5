package dispatch

import (
	"reflect"
	"testing"

	"github.com/chapar-dev/chapar/internal/topology"
)

func TestLeadSweeps(t *testing.T) {
	narrow := topology.PriorRead{Exists: true, Filters: []string{"chapar.events.track"}, Delivered: 40}
	whole := topology.PriorRead{Exists: true, Delivered: 40}
	missing := topology.PriorRead{}
	late := topology.PriorRead{Exists: true, Delivered: 40, Start: 30} // read everything, from above the old lead's floor
	tests := []struct {
		name   string
		prior  []topology.PriorRead
		floors []uint64
		found  []bool
		want   []leadSweep
	}{
		{"read by type: from above the old lead's floor", []topology.PriorRead{narrow}, []uint64{9}, []bool{true},
			[]leadSweep{{partition: 0, from: 10, prior: narrow}}},
		{"read everything already (the old first sink of a deployment before the mark): nothing",
			[]topology.PriorRead{whole}, []uint64{9}, []bool{true}, nil},
		{"read everything from at or below the old lead's floor: nothing", []topology.PriorRead{late}, []uint64{29}, []bool{true}, nil},
		{"read everything from above the old lead's floor: what is below its start", []topology.PriorRead{late}, []uint64{9}, []bool{true},
			[]leadSweep{{partition: 0, from: 10, prior: late}}},
		{"no old lead on the server (a fresh deployment): nothing", []topology.PriorRead{missing}, []uint64{0}, []bool{false}, nil},
		{"a new sink made the lead: all the old lead had not acked", []topology.PriorRead{missing}, []uint64{0}, []bool{true},
			[]leadSweep{{partition: 0, from: 1, prior: missing}}},
		{"per partition", []topology.PriorRead{narrow, whole, narrow}, []uint64{3, 4, 5}, []bool{true, true, false},
			[]leadSweep{{partition: 0, from: 4, prior: narrow}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := leadSweeps(tt.prior, tt.floors, tt.found); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("leadSweeps = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestWithEarlier(t *testing.T) {
	narrow := topology.PriorRead{Exists: true, Filters: []string{"chapar.events.track"}, Delivered: 40}
	whole := topology.PriorRead{Exists: true, Delivered: 40, Start: 30}
	later := topology.PriorRead{Exists: true, Filters: []string{"chapar.events.track"}, Delivered: 45}
	tests := []struct {
		name         string
		now, earlier []leadSweep
		want         []leadSweep
	}{
		{"first attempt", []leadSweep{{partition: 0, from: 11, prior: narrow}}, nil, []leadSweep{{partition: 0, from: 11, prior: narrow}}},
		{"read again narrow: this attempt's read", []leadSweep{{partition: 0, from: 11, prior: later}}, []leadSweep{{partition: 0, from: 11, prior: narrow}},
			[]leadSweep{{partition: 0, from: 11, prior: later}}},
		{"widened late: the earlier read stands", nil, []leadSweep{{partition: 0, from: 11, prior: narrow}}, []leadSweep{{partition: 0, from: 11, prior: narrow}}},
		{"widened late, started above the old floor: the earlier narrow read stands, from the lower",
			[]leadSweep{{partition: 0, from: 5, prior: whole}}, []leadSweep{{partition: 0, from: 11, prior: narrow, held: true}},
			[]leadSweep{{partition: 0, from: 5, prior: narrow, held: true}}},
		{"both read every subject: this attempt's read", []leadSweep{{partition: 0, from: 5, prior: whole}}, []leadSweep{{partition: 0, from: 11, prior: whole}},
			[]leadSweep{{partition: 0, from: 5, prior: whole}}},
		{"one partition each", []leadSweep{{partition: 1, from: 3, prior: later}}, []leadSweep{{partition: 0, from: 11, prior: narrow}},
			[]leadSweep{{partition: 1, from: 3, prior: later}, {partition: 0, from: 11, prior: narrow}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := withEarlier(tt.now, tt.earlier); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("withEarlier = %+v, want %+v", got, tt.want)
			}
		})
	}
}
