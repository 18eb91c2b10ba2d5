package sinks_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// Review of c2f8c33 (a merge into an empty record is a copy): kvTimes
// remembers the record it wrote under every name a request gave (one
// slice for all), and a later request naming one of them builds its
// record from that. The record remembered for the other name must not
// change: a merge that took the remembered slice itself would have the
// next request's messages written into its array, and its trim sort it.
// Then a message of the first request reserved again keeps its
// millisecond, and every message of the user has one of its own.
func TestMetrixTimesRememberedRecordIsNotChangedByTheNextRequest(t *testing.T) {
	e := testenv.New(t)
	ctx := context.Background()
	_, js := e.Connect()
	reserve, known, err := sinks.ReserveMetrixTimes(ctx, js, e.Topo.StreamPrefix())
	if err != nil {
		t.Fatal(err)
	}
	const want = int64(1_795_428_900_000)
	ids := func(p string, n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("%s-%d", p, i))
		}
		return out
	}
	both := []string{"c.alias", "m.alias"}
	first, err := reserve(ctx, both, ids("both", 5), want)
	if err != nil {
		t.Fatal(err)
	}
	m := known("m.alias")
	for round := range 4 {
		if _, err := reserve(ctx, both[:1], ids(fmt.Sprintf("c%d", round), 3), want-2); err != nil {
			t.Fatal(err)
		}
		if got := known("m.alias"); !slices.Equal(got, m) {
			t.Fatalf("round %d: the record remembered for m.alias changed by a request naming c.alias alone:\n %v\nwas\n %v", round, got, m)
		}
	}
	again, err := reserve(ctx, both[1:], ids("both", 5), want)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(again, first) {
		t.Errorf("the first request's messages reserved again: %v, first %v", again, first)
	}
	all, err := reserve(ctx, both, append(ids("both", 5), ids("new", 3)...), want)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int64]bool{}
	for _, at := range known("c.alias") {
		if seen[at] {
			t.Errorf("two of the user's messages at %d: %v", at, known("c.alias"))
		}
		seen[at] = true
	}
	t.Logf("first %v, all %v", first, all)
}
