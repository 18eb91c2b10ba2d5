package metrics

import (
	"fmt"
	"testing"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

// A producer may send any type; the type label keeps only Chapar's four
// and those the config's routes name, so 1,000 types of a producer's own
// are one series, "other".
func TestTypeLabelsAreChaparsAndTheRoutesTypes(t *testing.T) {
	m := NewFor([]string{"hook"}, []string{"com.shop.order.shipped", envelope.TypeTrack, "com bad type"})
	for i := range 1000 {
		m.Unrouted(fmt.Sprintf("com.shop.probe.%d", i), "")
	}
	m.Unrouted("com.shop.order.shipped", "")
	m.Unrouted("com.shop.order.shipped", "")
	m.Unrouted(envelope.TypeNotify, "")
	m.Unrouted("com bad type", "") // not a type: never a label
	want := map[string]float64{"other": 1001, "com.shop.order.shipped": 2, envelope.TypeNotify: 1}
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "chapar_events_unrouted_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			got[s.GetLabel()[0].GetValue()] = s.GetCounter().GetValue()
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("unrouted series %v, want %v", got, want)
	}
}
