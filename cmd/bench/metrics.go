package main

// Metrics sampling from /proc: a process's CPU time (utime + stime) and its
// peak resident set (VmHWM). Both are read while the process is alive.

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// cpuTime is the CPU time pid has used so far, user plus system.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces; fields after it start
	// at field 3 (state), so utime (14) and stime (15) are [11] and [12].
	_, rest, ok := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if !ok || len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// peakRSS is pid's high-water resident set size in bytes (VmHWM).
func peakRSS(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status VmHWM: %w", pid, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmHWM", pid)
}

// usage is what one measurement window cost a process.
type usage struct {
	pids  []int
	start time.Duration
}

// startUsage starts counting the CPU time of the processes pids.
func startUsage(pids ...int) (usage, error) {
	u := usage{pids: pids}
	t, err := u.total()
	u.start = t
	return u, err
}

func (u usage) total() (time.Duration, error) {
	var sum time.Duration
	for _, pid := range u.pids {
		t, err := cpuTime(pid)
		if err != nil {
			return 0, err
		}
		sum += t
	}
	return sum, nil
}

// since is the CPU time used since startUsage, by all of the processes.
func (u usage) since() (time.Duration, error) {
	t, err := u.total()
	return t - u.start, err
}

// loadAverage is the machine's 1-minute load average: anything well above
// zero before a run means another workload shares the CPUs.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return -1
	}
	f, err := strconv.ParseFloat(strings.Fields(string(b) + " ")[0], 64)
	if err != nil {
		return -1
	}
	return f
}

// machineBusy is the CPU time every process on the machine has used since
// boot (all of /proc/stat's cpu line but idle and iowait).
func machineBusy() (time.Duration, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 5 || f[0] != "cpu" {
		return 0, errors.New("/proc/stat: unexpected format")
	}
	var ticks int64
	for i, s := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/stat: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// noise measures what the rest of the machine uses during a window: all
// CPU time less this process's and the measured ones'.
type noise struct {
	at          time.Time
	busy, bench time.Duration
}

func startNoise() (noise, error) {
	busy, err := machineBusy()
	if err != nil {
		return noise{}, err
	}
	bench, err := cpuTime(os.Getpid())
	return noise{at: time.Now(), busy: busy, bench: bench}, err
}

// since returns the others' CPU time since startNoise, given what the
// measured processes used, and the window's length.
func (n noise) since(measured time.Duration) (other, window time.Duration, err error) {
	busy, err := machineBusy()
	if err != nil {
		return 0, 0, err
	}
	bench, err := cpuTime(os.Getpid())
	if err != nil {
		return 0, 0, err
	}
	return max(0, busy-n.busy-(bench-n.bench)-measured), time.Since(n.at), nil
}
