package dispatch

import (
	"testing"
	"time"
)

func TestDecidePaused(t *testing.T) {
	const week = 7 * 24 * time.Hour
	reach := week / 10 * 9 // 6 days 7.2 hours
	for _, c := range []struct {
		name    string
		age     time.Duration
		maxAge  time.Duration
		ordered bool
		want    pausedFate
	}{
		{"a fresh event waits, handed back for a check's period", time.Minute, week, false, pausedFate{handBack: time.Minute}},
		{"just short of the reach: back when it reaches it", reach - time.Second, week, false, pausedFate{handBack: time.Second}},
		{"at the reach: dead-lettered", reach, week, false, pausedFate{deadLetter: true}},
		{"past the reach: dead-lettered", reach + time.Hour, week, false, pausedFate{deadLetter: true}},
		{"past max_age (a late sweep): still dead-lettered", week + time.Hour, week, false, pausedFate{deadLetter: true}},
		{"ordered, within: handed back plainly", time.Minute, week, true, pausedFate{}},
		{"ordered, past: dead-lettered", reach, week, true, pausedFate{deadLetter: true}},
		{"a short max_age: the period is a tenth of the margin", 0, 8 * time.Second, false, pausedFate{handBack: 80 * time.Millisecond}},
		{"a shorter one: the period is 50 ms at least", 0, time.Second, false, pausedFate{handBack: 50 * time.Millisecond}},
		{"8 s: the reach is 7.2 s", 7200 * time.Millisecond, 8 * time.Second, false, pausedFate{deadLetter: true}},
		{"8 s: 7.19 s is within", 7190 * time.Millisecond, 8 * time.Second, false, pausedFate{handBack: 10 * time.Millisecond}},
		{"no max_age: nothing ages out, nothing is dead-lettered", 365 * 24 * time.Hour, 0, false, pausedFate{handBack: time.Minute}},
		{"no max_age, ordered", 365 * 24 * time.Hour, 0, true, pausedFate{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := decidePaused(c.age, c.maxAge, c.ordered); got != c.want {
				t.Errorf("decidePaused(%v, %v, %v) = %+v, want %+v", c.age, c.maxAge, c.ordered, got, c.want)
			}
		})
	}
}

func TestPauseReachAndPeriod(t *testing.T) {
	for _, c := range []struct {
		maxAge, reach, every time.Duration
	}{
		{7 * 24 * time.Hour, 151*time.Hour + 12*time.Minute, time.Minute},
		{time.Hour, 54 * time.Minute, 36 * time.Second},
		{20 * time.Second, 18 * time.Second, 200 * time.Millisecond},
		{time.Second, 900 * time.Millisecond, 50 * time.Millisecond},
		{0, 0, time.Minute},
	} {
		if got := PauseReach(c.maxAge); got != c.reach {
			t.Errorf("PauseReach(%v) = %v, want %v", c.maxAge, got, c.reach)
		}
		if got := rescueEvery(c.maxAge); got != c.every {
			t.Errorf("rescueEvery(%v) = %v, want %v", c.maxAge, got, c.every)
		}
		// The period is well under the margin: ten checks at least fit in it.
		if m := c.maxAge - c.reach; c.maxAge > 0 && rescueEvery(c.maxAge)*10 > m && rescueEvery(c.maxAge) > 50*time.Millisecond {
			t.Errorf("max_age %v: a check every %v, the margin %v", c.maxAge, rescueEvery(c.maxAge), m)
		}
	}
}
