package sinks

import (
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
)

func TestRegistryListsVendorsAndNamesTheValidOnes(t *testing.T) {
	names := vendors.Names()
	for _, want := range []string{"chabok", "kenar", "metrix-gateway", "metrix-s2s"} {
		if !slices.Contains(names, want) {
			t.Errorf("vendor %s is not registered: %v", want, names)
		}
	}
	if !slices.IsSorted(names) {
		t.Errorf("names not sorted: %v", names)
	}
	_, err := Build([]config.Sink{{Name: "a", Vendor: "mixpanel"}, {Name: "b"}})
	if err == nil {
		t.Fatal("accepted an unknown vendor")
	}
	msg := err.Error()
	for _, want := range []string{`sinks[0].vendor: "mixpanel" is not a vendor; use one of ` + strings.Join(names, ", "), "sinks[1].vendor: is required"} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not say %q", msg, want)
		}
	}
	v, ok := Lookup("metrix-s2s")
	if !ok || !slices.Equal(v.Settings, []string{"app_id", "dev_key", "event_time_unit"}) {
		t.Errorf("metrix-s2s settings keys %v", v.Settings)
	}
}

func TestRegistryRefusesLateAndRepeatedVendors(t *testing.T) {
	mustPanic := func(what string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s: no panic", what)
			}
		}()
		f()
	}
	var r Registry
	spec := Spec[struct{}]{Name: "x", New: func(config.Sink, struct{}) (Sink, error) { return nil, nil }}
	r.Add(spec.vendor())
	mustPanic("twice", func() { r.Add(spec.vendor()) })
	mustPanic("no name", func() { r.Add(Spec[struct{}]{New: spec.New}.vendor()) })
	r.Vendors()
	spec.Name = "y"
	mustPanic("after it was read", func() { r.Add(spec.vendor()) })
}

// Every vendor the emulator serves is one a sink can be built for, with the
// settings the emulator hands out.
func TestEmulatedVendorsAreRegistered(t *testing.T) {
	for _, h := range emulator.Handlers() {
		v, ok := Lookup(h.Name)
		if !ok {
			t.Errorf("the emulator serves %s, which no sink vendor registers", h.Name)
			continue
		}
		node := yaml.Node{}
		if err := node.Encode(emulator.DemoSettings(h.Name)); err != nil {
			t.Fatal(err)
		}
		if _, err := v.New(config.Sink{Name: h.Name, Vendor: h.Name, Concurrency: 1, Timeout: time.Second, Settings: node}, "settings"); err != nil {
			t.Errorf("%s with the emulator's demo settings: %v", h.Name, err)
		}
	}
}
