package dispatch

import (
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/retry"
)

// The shared pause's decisions (pause.go), as pure functions of the record.
func TestSharedPauseDecisions(t *testing.T) {
	now := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	sec := func(n float64) time.Time { return now.Add(time.Duration(n * float64(time.Second))) }
	const lease = 3 * time.Second
	paused := pauseRecord{Until: sec(5), Written: sec(-5)}
	over := pauseRecord{Until: sec(-1), Written: sec(-11)}
	theirs := pauseRecord{Until: sec(-1), Written: sec(-0.5), Prober: "b", ProbeUntil: sec(2.5)}
	lapsed := pauseRecord{Until: sec(-5), Written: sec(-4), Prober: "b", ProbeUntil: sec(-1)}
	mine := pauseRecord{Until: sec(-1), Written: sec(-0.5), Prober: "a", ProbeUntil: sec(2.5)}
	resumed := pauseRecord{Until: sec(-1), Written: sec(-0.5), Resumed: true}

	t.Run("extend", func(t *testing.T) {
		cases := []struct {
			name  string
			cur   pauseRecord
			until time.Time
			want  pauseRecord
			write bool
		}{
			{"a longer pause replaces the record", over, sec(1), pauseRecord{Until: sec(1), Written: now}, true},
			{"pauses never shorten", paused, sec(4), paused, false},
			{"an equal pause writes nothing", paused, sec(5), paused, false},
			{"a longer pause replaces a claim: its probe decides nothing", theirs, sec(1), pauseRecord{Until: sec(1), Written: now}, true},
			{"a longer pause ends a resumption", resumed, sec(1), pauseRecord{Until: sec(1), Written: now}, true},
		}
		for _, c := range cases {
			got, write := extendPause(c.cur, c.until, now)
			if got != c.want || write != c.write {
				t.Errorf("%s: got %+v, %v; want %+v, %v", c.name, got, write, c.want, c.write)
			}
		}
	})

	t.Run("claim", func(t *testing.T) {
		claimed := func(until time.Time) pauseRecord {
			return pauseRecord{Until: until, Written: now, Prober: "a", ProbeUntil: now.Add(lease)}
		}
		cases := []struct {
			name       string
			cur        pauseRecord
			have       bool
			localUntil time.Time
			want       pauseRecord
			verdict    claimVerdict
		}{
			{"no record (the pause was never shared): claim it", pauseRecord{}, false, sec(-1), claimed(sec(-1)), claimWrite},
			{"the deployment's pause is not over: wait", paused, true, sec(-1), paused, claimWait},
			{"the pause is over, nobody probes: claim", over, true, sec(-1), claimed(sec(-1)), claimWrite},
			{"another replica's probe is out: wait for it", theirs, true, sec(-1), theirs, claimWait},
			{"another replica's lease lapsed (it died or hung): claim", lapsed, true, sec(-1), claimed(sec(-1)), claimWrite},
			{"our own claim: claim again", mine, true, sec(-1), claimed(sec(-1)), claimWrite},
			{"resumed: no probe needed", resumed, true, sec(-1), resumed, claimNone},
			{"resumed, measured on our clock a little later: the same pause", resumed, true, sec(-0.2), resumed, claimNone},
			{"resumed long before our pause ended: ours is newer, claim it", pauseRecord{Until: sec(-3), Written: sec(-2.5), Resumed: true}, true, sec(-0.5), claimed(sec(-0.5)), claimWrite},
		}
		for _, c := range cases {
			got, v := claimProbe(c.cur, c.have, "a", c.localUntil, now, lease)
			if got != c.want || v != c.verdict {
				t.Errorf("%s: got %+v, %v; want %+v, %v", c.name, got, v, c.want, c.verdict)
			}
		}
	})

	t.Run("finish", func(t *testing.T) {
		cases := []struct {
			name     string
			cur      pauseRecord
			answered bool
			want     pauseRecord
			write    bool
		}{
			{"answered: every replica resumes", mine, true, pauseRecord{Until: mine.Until, Written: now, Resumed: true}, true},
			{"not made (shutdown): released for another replica", mine, false, pauseRecord{Until: mine.Until, Written: now}, true},
			{"a longer pause came meanwhile: left alone", paused, true, paused, false},
			{"another replica's claim: left alone", theirs, true, theirs, false},
		}
		for _, c := range cases {
			got, write := finishProbe(c.cur, true, "a", c.answered, now)
			if got != c.want || write != c.write {
				t.Errorf("%s: got %+v, %v; want %+v, %v", c.name, got, write, c.want, c.write)
			}
		}
	})

	t.Run("view", func(t *testing.T) {
		// Written 5 s before a 10 s pause's end on the writer's clock.
		rec := pauseRecord{Until: sec(5), Written: sec(0), Prober: "b", ProbeUntil: sec(8)}
		cases := []struct {
			name              string
			rec               pauseRecord
			created, received time.Time
			live              bool
			until, held       time.Time
		}{
			{"clocks agree", rec, sec(0), sec(0), true, sec(5), sec(8)},
			{"the writer's clock is behind the broker's: the broker's stamp lengthens it", rec, sec(0.3), sec(0.3), false, sec(5.3), sec(8.3)},
			{"the writer's clock is ahead: its until stands", rec, sec(-0.3), sec(-0.3), false, sec(5), sec(8)},
			{"seen live, our clock ahead of both: our receipt lengthens it", rec, sec(0), sec(0.4), true, sec(5.4), sec(8.4)},
			{"read at start, long after the write: receipt says nothing", rec, sec(0), sec(3), false, sec(5), sec(8)},
			{"our own claim holds nobody here", pauseRecord{Until: sec(5), Written: sec(0), Prober: "a", ProbeUntil: sec(8)}, sec(0), sec(0), true, sec(5), time.Time{}},
		}
		for _, c := range cases {
			v := viewOf(c.rec, "a", c.created, c.received, c.live)
			if !v.until.Equal(c.until) || !v.heldUntil.Equal(c.held) {
				t.Errorf("%s: until %s held %s; want %s, %s", c.name, v.until.Sub(now), v.heldUntil.Sub(now), c.until.Sub(now), c.held.Sub(now))
			}
		}
	})
}

// What the gate does with the deployment's record: another replica's
// probe shuts it until its answer, a pause extends it (never shortens),
// and a resumption ends the wait for a probe.
func TestGateLearnsTheDeploymentsPause(t *testing.T) {
	g := newGate("s", retry.BreakerSettings{FailureThreshold: 5, OpenTimeout: time.Second}, 4, zap.NewNop(), nil)
	now := time.Now()
	g.learn(pauseView{until: now.Add(2 * time.Second)})
	if w, _ := g.shutFor(now); w < 1900*time.Millisecond {
		t.Fatalf("shut for %s after learning a 2 s pause", w)
	}
	if !g.needProbe || g.limit != 1 {
		t.Errorf("after a learned pause: needProbe %v, limit %d; want a probe first, then the ramp from 1", g.needProbe, g.limit)
	}
	g.learn(pauseView{until: now.Add(time.Second)})
	if w, _ := g.shutFor(now); w < 1900*time.Millisecond {
		t.Errorf("a shorter pause shortened it to %s", w)
	}
	later := now.Add(3 * time.Second)
	g.learn(pauseView{until: now.Add(2 * time.Second), heldUntil: later.Add(3 * time.Second)})
	if w, _ := g.shutFor(later); w < 2900*time.Millisecond {
		t.Errorf("shut for %s while another replica's probe is out for 3 s more", w)
	}
	if w := g.handBackAfter(3*time.Second, later); w > time.Second {
		t.Errorf("a message held for another replica's probe comes back after %s, want at most 1 s", w)
	}
	g.learn(pauseView{until: now.Add(2 * time.Second), resumed: true})
	if w, _ := g.shutFor(later); w != 0 || g.needProbe {
		t.Errorf("after a resumption: shut for %s, needProbe %v", w, g.needProbe)
	}
}
