package dispatch

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/topology"
)

// Review of d751be6 (behindUntil): a consumer's word that it has more
// pending is believed for max_wait after it was said.
//
// 1. The word goes stale between two picks: the first pick, inside the
// word, returns the starvation wait (lastIn + starveAfter); the word
// passes before it. When that timer fires, pick must not send on the
// stale starvation (the rule is off), and must return the plain window's
// wait (since + max_wait - now), not 0 and not anything later.
// 2. Whatever the word, lastIn and when the last word came, pick never
// returns "nothing yet" at or past a group's since + max_wait, and its
// wait never reaches past it: the starve rule only brings a send
// forward, it cannot hold a group longer than max_wait.
//
// Green on 0666fc4.
func TestRev14BehindWordNeverHoldsPastMaxWaitNorSendsOnAStaleTimer(t *testing.T) {
	const maxWait = time.Second
	newC := func() *keyCollector {
		return &keyCollector{b: &batcher{hold: 100, maxItems: 10, maxWait: maxWait}, groups: map[string]*keyGroup{}, early: map[uint64]batchItem{}}
	}
	group := func(c *keyCollector, since time.Time) *keyGroup {
		g := &keyGroup{key: "u", items: []heldItem{{}}, since: since}
		c.groups["u"] = g
		c.idle = append(c.idle, queuedGroup{g, g.gen})
		c.held++
		return g
	}
	behindWord := func(c *keyCollector, at time.Time, pending uint64) {
		c.note(&delivery{origin: topology.Origin("CHAPAR_EVENTS_0", 1), pending: pending}, at)
	}

	t.Run("the word goes stale before the starvation timer", func(t *testing.T) {
		c := newC()
		t0 := time.Unix(1e9, 0)
		starve := c.b.starveAfter()                 // 20 ms
		behindWord(c, t0.Add(-maxWait+starve/4), 5) // believed until t0 + 5 ms
		c.lastIn = t0
		g := group(c, t0)
		if got, wait := c.pick(t0); got != nil || wait != starve {
			t.Fatalf("inside the word: pick = %v, %v; want nil, %v (starvation)", got != nil, wait, starve)
		}
		// The timer fires at the starvation time, the word stale by then.
		at := t0.Add(starve)
		if got, wait := c.pick(at); got != nil || wait != g.since.Add(maxWait).Sub(at) {
			t.Fatalf("after the word went stale: pick = %v, %v; want nil, %v (the window's due)", got != nil, wait, g.since.Add(maxWait).Sub(at))
		}
		if got, _ := c.pick(g.since.Add(maxWait)); got != g {
			t.Fatalf("at since + max_wait: pick sent nothing")
		}
	})

	t.Run("a fresh word never holds a group past max_wait", func(t *testing.T) {
		// The collector keeps taking events (lastIn now) and a consumer keeps
		// saying it has more: starvation never comes, the window does.
		c := newC()
		t0 := time.Unix(1e9, 0)
		g := group(c, t0)
		for now := t0; ; now = now.Add(time.Millisecond) {
			behindWord(c, now, 7)
			c.lastIn = now
			got, wait := c.pick(now)
			if got == g {
				if now.Sub(t0) != maxWait {
					t.Fatalf("sent at +%v, want at max_wait (%v)", now.Sub(t0), maxWait)
				}
				break
			}
			if now.Add(wait).After(t0.Add(maxWait)) {
				t.Fatalf("at +%v pick waits %v, past since + max_wait", now.Sub(t0), wait)
			}
		}
	})

	t.Run("random states", func(t *testing.T) {
		r := rand.New(rand.NewPCG(14, 14))
		t0 := time.Unix(1e9, 0)
		for i := range 20000 {
			c := newC()
			since := t0.Add(-time.Duration(r.Int64N(int64(2 * maxWait))))
			g := group(c, since)
			if r.IntN(2) == 0 {
				behindWord(c, t0.Add(-time.Duration(r.Int64N(int64(2*maxWait)))), uint64(r.IntN(3)))
			}
			c.lastIn = t0.Add(-time.Duration(r.Int64N(int64(maxWait / 10))))
			if r.IntN(4) == 0 {
				behindWord(c, c.lastIn, 0) // a partition caught up
			}
			if r.IntN(3) == 0 {
				behindWord(c, t0.Add(-time.Duration(r.Int64N(int64(maxWait)))), 0)
			}
			due := since.Add(maxWait)
			state := fmt.Sprintf("case %d: since %v, lastIn %v, behindUntil %v, nBehind %d", i, since.Sub(t0), c.lastIn.Sub(t0), c.behindUntil.Sub(t0), c.nBehind)
			got, wait := c.pick(t0)
			switch {
			case got == nil && !t0.Before(due):
				t.Fatalf("%s: nothing sent at or past since + max_wait", state)
			case got == nil && t0.Add(wait).After(due):
				t.Fatalf("%s: waits %v, past since + max_wait", state, wait)
			case got == nil && wait <= 0:
				t.Fatalf("%s: nothing sent and no wait", state)
			case got != nil && t0.Before(due) && !(c.nBehind > 0 && t0.Before(c.behindUntil)):
				t.Fatalf("%s: sent before max_wait without a believed word", state)
			}
			_ = g
		}
	})
}

// 3. behindUntil is one deadline for the collector, refreshed by any
// partition's word, while behind is per partition. A partition whose
// pending events were purged (behind, never heard from again) is believed
// past max_wait whenever another partition said it had more pending
// within max_wait, even after that partition has since caught up
// (pending 0): the starve rule is on although the only word still behind
// is older than max_wait. Live traffic on a partition that now and then
// has a few events pending (a burst) keeps behindUntil fresh, so a purged
// partition's stale word would keep the starve rule on for as long as the
// bursts come less than max_wait apart: the rev13 defect (1.00 events per
// request against 6.25) back under bursty live traffic.
//
// Red on 0666fc4: at t0 + 1.53 s (P0's word 1.53 s old, max_wait 1 s; P1
// caught up at t0 + 1.501 s), pick sends the group at once on the starve
// rule instead of waiting to since + max_wait (t0 + 2.55 s).
func TestRev14AStaleWordIsRevivedByAnotherPartitionsWord(t *testing.T) {
	const maxWait = time.Second
	c := &keyCollector{b: &batcher{hold: 100, maxItems: 10, maxWait: maxWait}, groups: map[string]*keyGroup{}, early: map[uint64]batchItem{}}
	t0 := time.Unix(1e9, 0)
	word := func(p int, at time.Duration, pending uint64) {
		c.note(&delivery{origin: topology.Origin(fmt.Sprintf("CHAPAR_EVENTS_%d", p), 1), pending: pending}, t0.Add(at))
	}
	word(0, 0, 5) // then purged: partition 0 never hands over another event
	word(1, 1500*time.Millisecond, 3)
	word(1, 1501*time.Millisecond, 0) // partition 1 caught up
	c.lastIn = t0.Add(1501 * time.Millisecond)
	g := &keyGroup{key: "u", items: []heldItem{{}}, since: t0.Add(1550 * time.Millisecond)}
	c.groups["u"], c.idle, c.held = g, []queuedGroup{{g, 0}}, 1
	now := t0.Add(1530 * time.Millisecond)
	if got, wait := c.pick(now); got != nil {
		t.Errorf("nBehind %d (partition 0's word %v old, max_wait %v), behindUntil +%v: pick sent at once on the starve rule; want nil, %v (since + max_wait)",
			c.nBehind, now.Sub(t0), maxWait, c.behindUntil.Sub(t0), g.since.Add(maxWait).Sub(now))
	} else if want := g.since.Add(maxWait).Sub(now); wait != want {
		t.Errorf("pick waits %v, want %v", wait, want)
	}
}
