package main

// The ceilings' table: each scenario's js-ceiling and http-ceiling beside
// the systems, and each system's throughput as a share of the lower
// ceiling (ceilings.go).

import (
	"fmt"
	"io"
	"strings"
)

// ceilingRow is one row of the ceilings' table; share says the row is a
// throughput, reported as a share of the lower ceiling.
type ceilingRow struct {
	m     metric
	share bool
}

func ceilingRows(sc scenario) []ceilingRow {
	var rows []ceilingRow
	for _, m := range metrics(sc) {
		switch {
		case m.name == "events/s" || m.name == "deliveries/s":
			rows = append(rows, ceilingRow{m: m, share: true})
		case strings.HasPrefix(m.name, "p"), strings.Contains(m.name, "CPU-s"):
			rows = append(rows, ceilingRow{m: m})
		}
	}
	return rows
}

// lowerCeiling is the lower of the two ceilings' throughput in a scenario
// (NaN when neither ran), and which one it is.
func lowerCeiling(sc scenario, byKey map[string]result) (float64, string) {
	low, which := nan(), ""
	for _, name := range ceilingNames {
		r, ok := byKey[sc.name+"/"+name]
		if !ok || r.err != nil || r.perSec <= 0 {
			continue
		}
		if isNaN(low) || r.perSec < low {
			low, which = r.perSec, name
		}
	}
	return low, which
}

// writeCeilings prints, for every scenario a ceiling ran in, the ceilings
// and the systems side by side, each system's throughput as a share of
// the lower ceiling, and Chapar's ratios to the peers.
func writeCeilings(w io.Writer, scs []scenario, byKey map[string]result) {
	header := false
	for _, sc := range scs {
		low, which := lowerCeiling(sc, byKey)
		if isNaN(low) {
			continue
		}
		if !header {
			fmt.Fprintln(w, "\nCeilings, same run: JetStream pull + ack without HTTP (js-ceiling), the vendor's HTTP without NATS (http-ceiling); each system's throughput as a share of the lower:")
			fmt.Fprintln(w, "\n| scenario | metric | js-ceiling | http-ceiling | Chapar | Watermill | lean | Chapar / ceiling | Watermill / ceiling | lean / ceiling | Chapar/lean | Chapar/Watermill |")
			fmt.Fprintln(w, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
			header = true
		}
		for i, row := range ceilingRows(sc) {
			title := ""
			if i == 0 {
				title = fmt.Sprintf("%s (lower: %s)", sc.name, which)
			}
			vals := map[string]float64{}
			var cells []string
			for _, sys := range append(append([]string{}, ceilingNames...), systemNames...) {
				r, ok := byKey[sc.name+"/"+sys]
				v := nan()
				if ok && r.err == nil {
					v = row.m.value(r, sc)
				}
				if sys == httpCeiling && strings.HasPrefix(row.m.name, "nats-server") {
					v = nan() // no NATS
				}
				vals[sys] = v
				switch {
				case ok && r.err != nil:
					cells = append(cells, "FAILED")
				case isNaN(v):
					cells = append(cells, "–")
				default:
					cells = append(cells, fmt.Sprintf("%.*f%s", row.m.prec, v, row.m.unit))
				}
			}
			for _, sys := range systemNames {
				if row.share {
					cells = append(cells, percent(vals[sys]/low))
				} else {
					cells = append(cells, "")
				}
			}
			cells = append(cells, ratio(vals["chapar"]/vals["lean"]), ratio(vals["chapar"]/vals["watermill"]))
			fmt.Fprintf(w, "| %s | %s | %s |\n", title, row.m.name, strings.Join(cells, " | "))
		}
	}
}

func percent(f float64) string {
	if isNaN(f) {
		return "–"
	}
	return fmt.Sprintf("%.1f%%", 100*f)
}
