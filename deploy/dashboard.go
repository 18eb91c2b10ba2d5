// Package deploy holds what runs Chapar elsewhere: the Grafana dashboard,
// the Prometheus alert rules, the Helm chart. Its tests keep them from
// drifting from the code; this file reads the dashboard's queries for
// them and for CI's PromQL check (deploy/dashrules).
package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"

	"go.yaml.in/yaml/v3"
)

// Query is a PromQL expression and, on a dashboard, its legend format.
type Query struct {
	Expr, Legend string
}

var (
	labelValues = regexp.MustCompile(`^label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)$`)
	// Grafana's interval variables, and any other variable (they are
	// label matchers' values here).
	intervalVar = regexp.MustCompile(`\$__(?:rate_interval|interval|range)\b`)
	otherVar    = regexp.MustCompile(`\$\{?\w+\}?`)
)

// DashboardQueries are a Grafana dashboard's panel targets and its query
// variables (label_values(metric, label): the metric, with the label as
// the legend, which must be the metric's as a legend's must). A panel
// without a query is an error.
func DashboardQueries(file string) ([]Query, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr   string `json:"expr"`
				Legend string `json:"legendFormat"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	var queries []Query
	for _, p := range d.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			return nil, fmt.Errorf("%s: panel %q has no query", file, p.Title)
		}
		for _, target := range p.Targets {
			queries = append(queries, Query{target.Expr, target.Legend})
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct {
			Query string `json:"query"`
		}
		if err := json.Unmarshal(v.Query, &q); err != nil {
			return nil, fmt.Errorf("%s: a variable's query: %w", file, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			return nil, fmt.Errorf("%s: variable query %q is not label_values(metric, label)", file, q.Query)
		}
		queries = append(queries, Query{m[1], "{{" + m[2] + "}}"})
	}
	return queries, nil
}

// RecordingRules renders queries as a Prometheus rule file of recording
// rules, Grafana's variables replaced by values a query runs with (5m for
// intervals, .* for the rest, which are regex matchers' values here), so
// promtool check rules parses every dashboard query as Prometheus would.
func RecordingRules(queries []Query) ([]byte, error) {
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, q := range queries {
		expr := intervalVar.ReplaceAllString(q.Expr, "5m")
		expr = otherVar.ReplaceAllString(expr, ".*")
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query_%d", i+1), Expr: expr})
	}
	return yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
}
