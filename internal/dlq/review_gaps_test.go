package dlq_test

import (
	"context"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// Review (dead-letter reads by direct get): with records deleted in the
// middle (runs across a batch's edge, a whole batch's worth, the first
// record) and tombstones written by a purge, a read visits every remaining
// record once, in order, from any cursor, with and without allow_direct;
// a purge removes exactly what its dry run counted, and a second finds none.
func TestReadsStepOverGapsAndTombstones(t *testing.T) {
	for _, direct := range []bool{true, false} {
		name := "direct"
		if !direct {
			name = "fallback"
		}
		t.Run(name, func(t *testing.T) {
			e := testenv.New(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			s, err := e.JS.Stream(ctx, e.Topo.DeadLetterStream())
			if err != nil {
				t.Fatal(err)
			}
			if !direct {
				old := s.CachedInfo().Config
				old.AllowDirect = false
				if _, err := e.JS.UpdateStream(ctx, old); err != nil {
					t.Fatal(err)
				}
			}
			const n = 600
			fill(ctx, t, e, n)
			gone := map[uint64]bool{}
			del := func(seq uint64) {
				if err := s.DeleteMsg(ctx, seq); err != nil {
					t.Fatal(err)
				}
				gone[seq] = true
			}
			del(1)
			for seq := uint64(60); seq <= 70; seq++ { // across the first batch's edge (64)
				del(seq)
			}
			for seq := uint64(200); seq <= 400; seq++ { // more than a 128-record batch
				del(seq)
			}
			st := dlq.NewStore(e.JS, e.Topo)
			walk := func(f dlq.Filter) []uint64 {
				var seqs []uint64
				if err := st.Each(ctx, f, func(r *dlq.Record) bool { seqs = append(seqs, r.Seq); return true }); err != nil {
					t.Fatal(err)
				}
				return seqs
			}
			check := func(what string, got []uint64, want func(uint64) bool, after uint64) {
				t.Helper()
				i := 0
				for seq := after + 1; seq <= n; seq++ {
					if !want(seq) {
						continue
					}
					if i >= len(got) || got[i] != seq {
						t.Fatalf("%s: record %d missing or out of place (read %d records)", what, seq, len(got))
					}
					i++
				}
				if i != len(got) {
					t.Fatalf("%s: read %d records, want %d", what, len(got), i)
				}
			}
			live := func(seq uint64) bool { return !gone[seq] }
			check("all", walk(dlq.Filter{}), live, 0)
			for _, after := range []uint64{0, 1, 59, 64, 199, 300, 400} {
				check("after", walk(dlq.Filter{After: after}), live, after)
			}
			// Sink a's records (odd sequences: fill alternates a, b from 1).
			isA := func(seq uint64) bool { return live(seq) && seq%2 == 1 }
			check("sink a", walk(dlq.Filter{Sink: "a"}), isA, 0)

			dry, err := st.Replay(ctx, dlq.Filter{Sink: "a"}, dlq.ReplayOptions{DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			purged, err := st.Purge(ctx, dlq.Filter{Sink: "a", Through: dry.Last})
			if err != nil {
				t.Fatal(err)
			}
			again, err := st.Purge(ctx, dlq.Filter{Sink: "a", Through: dry.Last})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("dry run %d, purged %d, purged again %d", dry.Matched, purged, again)
			if purged != dry.Matched || again != 0 {
				t.Fatalf("dry run counted %d, purge removed %d, a second purge %d", dry.Matched, purged, again)
			}
			isB := func(seq uint64) bool { return live(seq) && seq%2 == 0 }
			check("after the purge", walk(dlq.Filter{}), isB, 0)
			check("sink b after the purge", walk(dlq.Filter{Sink: "b"}), isB, 0)
			if got := walk(dlq.Filter{Sink: "a"}); len(got) != 0 {
				t.Fatalf("%d records of sink a after the purge", len(got))
			}
		})
	}
}
