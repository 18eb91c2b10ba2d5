package sinks

// Review of c2f8c33 (the reservation indexes a user's record once, and
// merges records by name): over random reservations, the new take,
// registerBelow and merge give every message the millisecond the ones
// before the change gave (kept here as they were), each request's messages
// distinct milliseconds, a message seen before its millisecond again, and
// never change the records they merged from (memTimes.users).

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// oldMetrixSlots is the record with the methods before c2f8c33.
type oldMetrixSlots []metrixSlot

func (r *oldMetrixSlots) take(s metrixSlot) int64 {
	if at, ok := r.find(s); ok {
		return at
	}
	lo, hi := int64(minInt64), int64(maxInt64)
	for _, x := range *r {
		if x.Kind != metrixKindMessage {
			continue
		}
		if x.before(s) {
			lo = max(lo, x.At+1)
		} else {
			hi = min(hi, x.At-1)
		}
	}
	used := r.used()
	at, ok := int64(0), false
	for t := max(s.Want, lo); t <= hi; t++ {
		if !used[t] {
			at, ok = t, true
			break
		}
	}
	for t := min(s.Want, hi); !ok && t >= lo && t > s.Want-metrixSlotsHorizon; t-- {
		if !used[t] {
			at, ok = t, true
		}
	}
	if !ok {
		at = firstFree(used, s.Want)
	}
	s.At = at
	*r = append(*r, s)
	return at
}

func (r *oldMetrixSlots) registerBelow(s metrixSlot, below int64) int64 {
	if at, ok := r.find(s); ok {
		return at
	}
	used := r.used()
	at, ok := int64(0), false
	for t := below - 1; t > below-metrixSlotsHorizon; t-- {
		if !used[t] {
			at, ok = t, true
			break
		}
	}
	if !ok {
		at = firstFree(used, below)
	}
	s.At = at
	*r = append(*r, s)
	return at
}

func (r oldMetrixSlots) find(s metrixSlot) (int64, bool) {
	for _, x := range r {
		if x.ID == s.ID && x.Kind == s.Kind {
			return x.At, true
		}
	}
	return 0, false
}

func (r oldMetrixSlots) used() map[int64]bool {
	used := make(map[int64]bool, len(r))
	for _, x := range r {
		used[x.At] = true
	}
	return used
}

func (r *oldMetrixSlots) merge(o metrixSlots) {
	for _, x := range o {
		if !slices.ContainsFunc(*r, func(y metrixSlot) bool { return x.ID == y.ID && x.Kind == y.Kind }) {
			*r = append(*r, x)
		}
	}
}

// reviewRequest is one request of a random sequence: the record names it
// carries, its messages in the user's order, and whether it registers.
type reviewRequest struct {
	users    []string
	msgs     []metrixSlot
	register bool
}

func randomRequests(rng *rand.Rand, n, pool int) []reviewRequest {
	const T = int64(1_795_428_900_000)
	names := [][]string{{"c"}, {"m"}, {"c", "m"}, {"m", "c"}, {"c2"}, {"c2", "m"}}
	var out []reviewRequest
	recv := int64(0)
	for range n {
		set := rng.IntN(len(names))
		rq := reviewRequest{users: names[set], register: rng.IntN(3) == 0}
		k := 1 + rng.IntN(6)
		// Messages in the user's order, wanting a few milliseconds
		// around each other (collisions), some seen before (retries,
		// replays: ids from a small pool), some late (out of order). An
		// event names its user's ids, so a message is sent again with
		// the same record names: its ids are drawn per set of names.
		want := T + int64(rng.IntN(40))
		if pool > 15 {
			// Long runs: the records fill (metrixSlotsMax) and age past
			// the horizon, so trim forgets some.
			want += int64(len(out)) * metrixSlotsHorizon / 200
		}
		for range k {
			recv += int64(rng.IntN(3))
			if rng.IntN(5) == 0 {
				want -= int64(rng.IntN(10))
			} else {
				want += int64(rng.IntN(3))
			}
			rq.msgs = append(rq.msgs, metrixSlot{Want: want, Recv: recv, ID: uint64(set*10000 + rng.IntN(pool)), Kind: metrixKindMessage})
		}
		out = append(out, rq)
	}
	return out
}

// oldReserve is memTimes.reserve before c2f8c33, over the old methods.
func oldReserve(store map[string]metrixSlots, users []string, fn func(r *oldMetrixSlots)) {
	var r oldMetrixSlots
	for _, u := range users {
		r.merge(store[u])
	}
	fn(&r)
	s := metrixSlots(r)
	s.trim()
	for _, u := range users {
		store[u] = s
	}
}

func TestMetrixReservationAsBeforeOverRandomSequences(t *testing.T) {
	longest := 0
	for seed := range uint64(120) {
		rng := rand.New(rand.NewPCG(seed, 7))
		old := map[string]metrixSlots{}
		var mem memTimes
		n, pool := 80, 15
		if seed%4 == 0 {
			n, pool = 400, 300
		}
		for i, rq := range randomRequests(rng, n, pool) {
			stamp := func(take func(metrixSlot) int64, reg func(metrixSlot, int64) int64) []int64 {
				var ats []int64
				first := int64(maxInt64)
				for _, m := range rq.msgs {
					at := take(m)
					ats = append(ats, at)
					first = min(first, at)
				}
				if rq.register {
					s := rq.msgs[0]
					s.ID, s.Kind = s.ID+1_000_000, metrixKindRegister
					ats = append(ats, reg(s, first))
				}
				return ats
			}
			var was []int64
			oldReserve(old, rq.users, func(r *oldMetrixSlots) { was = stamp(r.take, r.registerBelow) })
			// The records merged from, as stored before this request.
			before := map[string]metrixSlots{}
			for u, r := range mem.users {
				before[u] = slices.Clone(r)
			}
			var got []int64
			var merged metrixSlots
			_ = mem.reserve(t.Context(), rq.users, func(b *metrixBook) {
				merged = slices.Clone(b.slots)
				got = stamp(b.take, b.registerBelow)
				for u, r := range mem.users {
					if !slices.Equal(r, before[u]) {
						t.Fatalf("seed %d request %d: user %s's stored record changed by the reservation:\n %v\nwas\n %v", seed, i, u, r, before[u])
					}
				}
			})
			if !slices.Equal(got, was) {
				t.Fatalf("seed %d request %d (%v): milliseconds %v, before c2f8c33 %v", seed, i, rq.users, got, was)
			}
			// Every record, the ones this request did not name too: one
			// aliasing another (a request of two names stores one slice
			// under both) would be changed by the next request of one.
			for u := range old {
				if !slices.Contains(rq.users, u) && !slices.Equal(mem.users[u], before[u]) {
					t.Fatalf("seed %d request %d (%v): %s's record, not named, changed:\n %v\nwas\n %v", seed, i, rq.users, u, mem.users[u], before[u])
				}
				if !slices.Equal(mem.users[u], old[u]) {
					t.Fatalf("seed %d request %d: %s's record\n %v\nbefore c2f8c33\n %v", seed, i, u, mem.users[u], old[u])
				}
			}
			for _, u := range rq.users {
				longest = max(longest, len(mem.users[u]))
			}
			// Distinct within the request (a message named twice in it
			// takes one millisecond, as a retry).
			names := map[int64]metrixName{}
			for j, at := range got {
				n := metrixName{rq.msgs[min(j, len(rq.msgs)-1)].ID, metrixKindMessage}
				if j == len(rq.msgs) {
					n = metrixName{rq.msgs[0].ID + 1_000_000, metrixKindRegister}
				}
				if o, dup := names[at]; dup && o != n {
					t.Fatalf("seed %d request %d: %v and %v both at %d", seed, i, o, n, at)
				}
				names[at] = n
			}
			// A message in the merged record takes its millisecond again.
			for j, m := range rq.msgs {
				if k := slices.IndexFunc(merged, func(x metrixSlot) bool { return x.name() == m.name() }); k >= 0 && merged[k].At != got[j] {
					t.Fatalf("seed %d request %d: %v was at %d, given %d", seed, i, m.name(), merged[k].At, got[j])
				}
			}
		}
	}
	if longest < metrixSlotsMax {
		t.Errorf("the longest record held %d messages: no run filled one (%d), trim untested", longest, metrixSlotsMax)
	}
}
