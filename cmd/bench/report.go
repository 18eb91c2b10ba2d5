package main

// The report: one markdown table with every scenario's figures for every
// system, the ratios Chapar/Watermill and Chapar/lean, and the goals.

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"
)

// metric is one row of the table.
type metric struct {
	name  string
	value func(r result, sc scenario) float64
	unit  string // printed after the value
	prec  int
	goal  string
	// met judges the goal from Chapar's value and its ratios to the peers
	// (NaN where a peer was not run).
	met func(chapar, perWatermill, perLean float64) bool
}

func rate(r result, _ scenario) float64 { return r.perSec }

func cpuPerK(d func(result) time.Duration) func(result, scenario) float64 {
	return func(r result, _ scenario) float64 { return d(r).Seconds() / float64(r.events) * 1000 }
}

func percentile(p float64) func(result, scenario) float64 {
	return func(r result, _ scenario) float64 {
		if len(r.lat) == 0 {
			return nan()
		}
		i := min(len(r.lat)-1, int(p*float64(len(r.lat))))
		return float64(r.lat[i]) / float64(time.Millisecond)
	}
}

// metrics are the rows a scenario reports, with the goals that apply to it.
func metrics(sc scenario) []metric {
	sysCPU := metric{name: "system CPU-s / 1k events", value: cpuPerK(func(r result) time.Duration { return r.sysCPU }), prec: 3}
	natsCPU := metric{name: "nats-server CPU-s / 1k events", value: cpuPerK(func(r result) time.Duration { return r.natsCPU }), prec: 3}
	rss := metric{name: "peak RSS", value: func(r result, _ scenario) float64 { return mib(r.rss) }, unit: " MiB", prec: 1}
	throughput := metric{name: "events/s", value: rate}
	// Issue 20's goals: at a lean consumer's limit, in CPU too; peak RSS
	// at most 48 MiB in every scenario below but batching.
	rss.goal, rss.met = "≤ 48 MiB", func(c, _, _ float64) bool { return c <= 48 }
	switch sc.name {
	case "backlog16", "backlog64", "fanout3":
		sysCPU.goal, sysCPU.met = "≤ 1.1× lean", func(_, _, l float64) bool { return l <= 1.1 }
		natsCPU.goal, natsCPU.met = "≤ 1.2× lean's", func(_, _, l float64) bool { return l <= 1.2 }
	}
	switch sc.name {
	case "backlog16", "backlog64":
		throughput.goal = "≥ 0.95× lean"
		throughput.met = func(_, _, l float64) bool { return l >= 0.95 }
		return []metric{throughput, sysCPU, natsCPU, rss}
	case "fanout3":
		throughput.name = "deliveries/s"
		throughput.goal, throughput.met = "≥ 0.95× lean", func(_, _, l float64) bool { return l >= 0.95 }
		return []metric{throughput, sysCPU, natsCPU, rss}
	case "slow":
		ideal := float64(sc.workers) / sc.latency.Seconds()
		share := metric{name: fmt.Sprintf("%% of %d/%s = %.0f/s", sc.workers, sc.latency, ideal),
			value: func(r result, _ scenario) float64 { return 100 * r.perSec / ideal }, unit: "%", prec: 1,
			goal: "≥ lean's", met: func(_, _, l float64) bool { return l >= 1 }}
		return []metric{throughput, share, sysCPU, natsCPU, rss}
	case "bulk-chabok-1", "bulk-chabok", "bulk-metrix-1", "bulk-metrix":
		rss.goal, rss.met = "", nil
		perReq := metric{name: "events per request", value: func(r result, _ scenario) float64 { return r.perRequest }, prec: 1}
		order := metric{name: "users out of order", value: func(r result, _ scenario) float64 { return float64(r.outOfOrder) }}
		switch sc.name {
		case "bulk-chabok":
			throughput.goal, throughput.met = "≥ 50,000", func(c, _, _ float64) bool { return c >= 50000 }
		case "bulk-metrix":
			order.goal, order.met = "0", func(c, _, _ float64) bool { return c == 0 }
			rss.goal, rss.met = "≤ 64 MiB", func(c, _, _ float64) bool { return c <= 64 }
		}
		return []metric{throughput, perReq, order, sysCPU, natsCPU, rss}
	case "rate", "rate5k":
		p50 := metric{name: "p50 publish → vendor", value: percentile(0.50), unit: " ms", prec: 2}
		if sc.name == "rate" {
			p50.goal, p50.met = "≤ 1 ms", func(c, _, _ float64) bool { return c <= 1 }
		}
		// Issue 20: p99 at most 1.3× lean's at 1,000 and 5,000 events/s.
		p99 := metric{name: "p99 publish → vendor", value: percentile(0.99), unit: " ms", prec: 2,
			goal: "≤ 1.3× lean", met: func(_, _, l float64) bool { return l <= 1.3 }}
		p999 := metric{name: "p99.9 publish → vendor", value: percentile(0.999), unit: " ms", prec: 2}
		maxLat := metric{name: "max publish → vendor", value: percentile(1), unit: " ms", prec: 2}
		return []metric{throughput, p50, p99, p999, maxLat, sysCPU, natsCPU, rss}
	}
	return []metric{throughput, sysCPU, natsCPU, rss}
}

func nan() float64 { var z float64; return z / z }

func isNaN(f float64) bool { return f != f }

// writeReport prints the machine, the command and the table. load is the
// 1-minute load average before the run.
func writeReport(w io.Writer, command string, load float64, scs []scenario, results []result) {
	fmt.Fprintf(w, "Machine: %s, %d CPUs, %s/%s, %s. Date: %s. Load average (1 min) before the run: %.2f.\n\n",
		cpuModel(), runtime.NumCPU(), runtime.GOOS, runtime.GOARCH, runtime.Version(), time.Now().UTC().Format("2006-01-02"), load)
	fmt.Fprintf(w, "Command: `%s`\n\n", command)
	if slices.ContainsFunc(scs, func(sc scenario) bool { return sc.name != retryStormName }) {
		fmt.Fprintln(w, "| scenario | metric | Chapar | Watermill | lean | Chapar/Watermill | Chapar/lean | goal | met |")
		fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|---|---|")
	}
	byKey := map[string]result{}
	for _, r := range results {
		byKey[r.scenario+"/"+r.system] = r
	}
	for _, sc := range scs {
		if sc.name == retryStormName {
			continue // a table of its own (writeRetryStorm)
		}
		for i, m := range metrics(sc) {
			title := ""
			if i == 0 {
				title = fmt.Sprintf("%s (%d events)", sc.title, sc.events)
			}
			vals := map[string]float64{}
			cells := []string{}
			for _, sys := range systemNames {
				r, ok := byKey[sc.name+"/"+sys]
				switch {
				case !ok:
					cells, vals[sys] = append(cells, "–"), nan()
				case r.err != nil:
					cells, vals[sys] = append(cells, "FAILED"), nan()
				default:
					v := m.value(r, sc)
					cells, vals[sys] = append(cells, fmt.Sprintf("%.*f%s", m.prec, v, m.unit)), v
				}
			}
			perW, perL := vals["chapar"]/vals["watermill"], vals["chapar"]/vals["lean"]
			met := ""
			if m.met != nil {
				switch {
				case isNaN(vals["chapar"]):
					met = "?"
				case m.met(vals["chapar"], perW, perL):
					met = "yes"
				default:
					met = "**no**"
				}
			}
			fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s | %s |\n", title, m.name, strings.Join(cells, " | "),
				ratio(perW), ratio(perL), m.goal, met)
		}
	}
	writeScaleOut(w, scs, byKey)
	writeBatching(w, byKey)
	writeRetention(w, scs, byKey)
	writeCeilings(w, scs, byKey)
	writeVariant(w, scs, byKey)
	writeKSinks(w, scs, byKey)
	writeRetryStorm(w, byKey)
	var noisy []string
	for _, r := range results {
		if r.err == nil && r.disturbed() {
			noisy = append(noisy, fmt.Sprintf("- %s, %s: %.1f CPU-s in %.1f s", r.system, r.scenario, r.otherCPU.Seconds(), r.window.Seconds()))
		}
	}
	if len(noisy) > 0 {
		fmt.Fprintf(w, "\nOther processes used the CPUs during these measurements (more than a tenth of one CPU, three tries each); their figures are disturbed:\n%s\n", strings.Join(noisy, "\n"))
	}
	var failed []string
	for _, r := range results {
		if r.err != nil {
			failed = append(failed, fmt.Sprintf("- %s, %s: %v", r.system, r.scenario, r.err))
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(w, "\nFAILED:\n%s\n", strings.Join(failed, "\n"))
	}
}

// writeScaleOut prints the scale-out scenarios' throughput as ratios to
// one replica on one partition, measured in the same run (docs/scaling.md).
func writeScaleOut(w io.Writer, scs []scenario, byKey map[string]result) {
	base, ok := byKey["scale-r1-p1/chapar"]
	if !ok || base.err != nil || base.perSec == 0 {
		return
	}
	fmt.Fprintln(w, "\nScale-out (Chapar, 3-node cluster), relative to 1 replica on 1 partition:")
	fmt.Fprintln(w, "\n| replicas | partitions | events/s | × 1 replica, 1 partition | Chapar CPU-s / 1k | nats-server CPU-s / 1k (3 nodes) | busiest node's share of nats-server CPU |")
	fmt.Fprintln(w, "|--:|--:|--:|--:|--:|--:|--:|")
	for _, sc := range scs {
		r, ok := byKey[sc.name+"/chapar"]
		if sc.nodes == 0 || !ok || r.err != nil {
			continue
		}
		perK := func(d time.Duration) float64 { return d.Seconds() / float64(r.events) * 1000 }
		var busiest time.Duration
		for _, t := range r.nodeCPU {
			busiest = max(busiest, t)
		}
		fmt.Fprintf(w, "| %d | %d | %.0f | %.2f× | %.3f | %.3f | %.0f%% |\n", sc.replicas, sc.partitions, r.perSec,
			r.perSec/base.perSec, perK(r.sysCPU), perK(r.natsCPU), 100*busiest.Seconds()/r.natsCPU.Seconds())
	}
}

// writeBatching sets each vendor's batched rate beside its one event per
// request rate, measured in the same run.
func writeBatching(w io.Writer, byKey map[string]result) {
	header := false
	for _, v := range []struct{ name, one, batched, goal string }{
		{"Chabok trackBulk", "bulk-chabok-1", "bulk-chabok", "≥ 50,000 events/s"},
		{"Metrix gateway", "bulk-metrix-1", "bulk-metrix", "≥ 3× one per request, ≤ 64 MiB, every user in order"},
	} {
		one, ok1 := byKey[v.one+"/chapar"]
		b, ok2 := byKey[v.batched+"/chapar"]
		if !ok1 || !ok2 || one.err != nil || b.err != nil || one.perSec == 0 {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\nBatching (Chapar), batched against one event per request, same run:")
			fmt.Fprintln(w, "\n| vendor | one per request, events/s | batched, events/s | × | events per request | users out of order | peak RSS batched | goal |")
			fmt.Fprintln(w, "|---|--:|--:|--:|--:|--:|--:|---|")
			header = true
		}
		fmt.Fprintf(w, "| %s | %.0f | %.0f | %.2f× | %.1f | %d | %.1f MiB | %s |\n", v.name, one.perSec, b.perSec,
			b.perSec/one.perSec, b.perRequest, b.outOfOrder, mib(b.rss), v.goal)
	}
}

// writeRetention compares Chapar's events streams with limits retention
// (as built) and with interest retention (chapar-interest), when both ran:
// throughput, nats-server CPU per event, and the disk the kept events take
// (docs/design.md, "Retention").
func writeRetention(w io.Writer, scs []scenario, byKey map[string]result) {
	header := false
	for _, sc := range scs {
		l, okL := byKey[sc.name+"/chapar"]
		i, okI := byKey[sc.name+"/chapar-interest"]
		if !okL || !okI || l.err != nil || i.err != nil {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\nRetention of the events stream, Chapar with limits (as built) and interest (-tags chapar_interest):")
			fmt.Fprintln(w, "\n| scenario | retention | events/s | nats-server CPU-s / 1k | Chapar CPU-s / 1k | stream msgs after | stream MiB after | MiB per million events |")
			fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|")
			header = true
		}
		for _, r := range []struct {
			name string
			res  result
		}{{"limits", l}, {"interest", i}} {
			perK := func(d time.Duration) float64 { return d.Seconds() / float64(r.res.events) * 1000 }
			perMillion := "–"
			if r.res.streamMsgs > 0 {
				perMillion = fmt.Sprintf("%.0f", mib(r.res.streamBytes)/float64(r.res.streamMsgs)*1e6)
			}
			fmt.Fprintf(w, "| %s | %s | %.0f | %.3f | %.3f | %d | %.1f | %s |\n", sc.name, r.name, r.res.perSec,
				perK(r.res.natsCPU), perK(r.res.sysCPU), r.res.streamMsgs, mib(r.res.streamBytes), perMillion)
		}
	}
}

// writeKSinks prints the split scenarios (each event to one of K sinks) as
// ratios to one sink of the same system in the same run: what the sinks an
// event does not go to cost (issue 20).
func writeKSinks(w io.Writer, scs []scenario, byKey map[string]result) {
	header := false
	for _, sys := range []string{"chapar", "chapar-nofilter"} {
		base, ok := byKey["ksinks1/"+sys]
		if !ok || base.err != nil || base.perSec == 0 {
			continue
		}
		perK := func(r result, d time.Duration) float64 { return d.Seconds() / float64(r.events) * 1000 }
		for _, sc := range scs {
			r, ok := byKey[sc.name+"/"+sys]
			if !sc.split || !ok || r.err != nil {
				continue
			}
			if !header {
				fmt.Fprintln(w, "\nSinks an event does not go to (each event to one of K webhook sinks), relative to one sink of the same system, same run:")
				fmt.Fprintln(w, "\n| system | K | routed by | events/s | × K=1 | dispatcher CPU-s / 1k | × K=1 | nats-server CPU-s / 1k | × K=1 | missed heartbeats | goal |")
				fmt.Fprintln(w, "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|---|")
				header = true
			}
			by, goal := "type", ""
			if sc.byName {
				by = "name"
			}
			if sys == "chapar" && sc.sinks == 16 && !sc.byName {
				goal = "≥ 0.8× K=1, CPU per event nearly flat, no missed heartbeats"
			}
			fmt.Fprintf(w, "| %s | %d | %s | %.0f | %.2f× | %.3f | %.2f× | %.3f | %.2f× | %d | %s |\n", sys, sc.sinks, by, r.perSec, r.perSec/base.perSec,
				perK(r, r.sysCPU), r.sysCPU.Seconds()/base.sysCPU.Seconds()*float64(base.events)/float64(r.events),
				perK(r, r.natsCPU), r.natsCPU.Seconds()/base.natsCPU.Seconds()*float64(base.events)/float64(r.events), r.missedHeartbeats, goal)
		}
	}
}

func ratio(f float64) string {
	if isNaN(f) {
		return "–"
	}
	return fmt.Sprintf("%.2f×", f)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}
