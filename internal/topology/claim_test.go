package topology

import (
	"context"
	"testing"
	"time"
)

// A loss is claimed once, by whoever reports it first; whenever the claim
// cannot be settled it is reported anyway (counted twice, never missed),
// and a removed sink's claims go with its floors.
func TestClaimLoss(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	kv, err := topo.EnsureFloors(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	one := Restored{Stream: topo.EventsStream(), Plan: LostFromFloor, Instance: time.Unix(1_800_000_000, 5)}
	other := one
	other.Instance = one.Instance.Add(time.Nanosecond)
	steps := []struct {
		name string
		do   func() bool
		want bool
	}{
		{"the first claim of a loss", func() bool { return claimLoss(ctx, kv, "gw", one) }, true},
		{"the same loss again (another replica, a later start)", func() bool { return claimLoss(ctx, kv, "gw", one) }, false},
		{"another instance: another loss", func() bool { return claimLoss(ctx, kv, "gw", other) }, true},
		{"the same loss of another sink", func() bool { return claimLoss(ctx, kv, "gw2", one) }, true},
		{"no floors bucket: reported", func() bool { return claimLoss(ctx, nil, "gw", one) }, true},
		{"no instance: reported", func() bool { return claimLoss(ctx, kv, "gw", Restored{Stream: one.Stream}) }, true},
		{"no instance again: still reported", func() bool { return claimLoss(ctx, kv, "gw", Restored{Stream: one.Stream}) }, true},
		{"the sink removed and added again", func() bool {
			if err := topo.DeleteFloors(ctx, js, "gw"); err != nil {
				t.Fatal(err)
			}
			return claimLoss(ctx, kv, "gw", one)
		}, true},
		{"the other sink's claim stays", func() bool { return claimLoss(ctx, kv, "gw2", one) }, false},
	}
	for _, s := range steps {
		if got := s.do(); got != s.want {
			t.Errorf("%s: claimLoss %v, want %v", s.name, got, s.want)
		}
	}
	cut, cancelCut := context.WithCancel(ctx)
	cancelCut()
	if !claimLoss(cut, kv, "gw3", one) {
		t.Error("a claim whose request failed: not reported")
	}
}
