// Package deploy holds what runs Chapar elsewhere: the Grafana dashboard,
// the Prometheus alert rules, the Helm chart. Its tests keep them from
// drifting from the code.
package deploy

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/metrics/metricstest"
)

// Every metric a dashboard panel, a dashboard variable or an alert rule
// queries is one the code exports (scraped from a real /metrics with every
// series set), so a renamed metric breaks this test, not a dashboard in
// production.
func TestDashboardsAndAlertsQueryExportedMetrics(t *testing.T) {
	exported := metricstest.Names(metricstest.Scrape(t))
	sources := map[string][]string{} // file → its PromQL expressions
	dashboards, err := filepath.Glob("grafana/*.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range dashboards {
		sources[f] = dashboardExprs(t, f)
	}
	rules, err := filepath.Glob("prometheus/*.rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rules {
		sources[f] = ruleExprs(t, f)
	}
	if len(dashboards) == 0 || len(rules) == 0 {
		t.Fatalf("found %d dashboards and %d rule files; want both", len(dashboards), len(rules))
	}
	for file, exprs := range sources {
		if len(exprs) == 0 {
			t.Errorf("%s: no PromQL expressions found", file)
		}
		for _, expr := range exprs {
			names := metricNames(expr)
			if len(names) == 0 {
				t.Errorf("%s: %q queries no metric", file, expr)
			}
			for _, n := range names {
				if !exported[n] {
					t.Errorf("%s: %q queries %s, which Chapar does not export", file, expr, n)
				}
			}
		}
	}
}

// dashboardExprs are a Grafana dashboard's panel targets' expressions and
// its query variables' queries.
func dashboardExprs(t *testing.T, file string) []string {
	t.Helper()
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	readStrict(t, file, func(b []byte) error { return json.Unmarshal(b, &d) })
	var exprs []string
	for _, p := range d.Panels {
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("%s: panel %q has no query", file, p.Title)
		}
		for _, target := range p.Targets {
			exprs = append(exprs, target.Expr)
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
			t.Fatalf("%s: a variable's query: %v", file, err)
		}
		// label_values(metric, label): the metric is the expression.
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Fatalf("%s: variable query %q is not label_values(metric, label)", file, q.Query)
		}
		exprs = append(exprs, m[1])
	}
	return exprs
}

// ruleExprs are a Prometheus rule file's expressions.
func ruleExprs(t *testing.T, file string) []string {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []struct {
				Expr string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readStrict(t, file, func(b []byte) error { return yaml.Unmarshal(b, &f) })
	var exprs []string
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
		}
	}
	return exprs
}

func readStrict(t *testing.T, file string, decode func([]byte) error) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := decode(b); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

var (
	// What is not a metric name: strings, label matchers, ranges and
	// subqueries, Grafana variables, and the label lists of by, without,
	// on, ignoring, group_left and group_right.
	notMetric = []*regexp.Regexp{
		regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`),
		regexp.MustCompile(`\{[^}]*\}`),
		regexp.MustCompile(`\[[^\]]*\]`),
		regexp.MustCompile(`\$\{?\w+\}?`),
		regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`),
	}
	labelValues = regexp.MustCompile(`^label_values\(\s*(.+?)\s*,\s*\w+\s*\)$`)
	identifier  = regexp.MustCompile(`[a-zA-Z_:][\w:]*`)
	keywords    = []string{"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "inf", "nan", "Inf", "NaN"}
)

// metricNames are the metric names a PromQL expression selects: its
// identifiers that are neither functions, keywords nor labels.
func metricNames(expr string) []string {
	for _, re := range notMetric {
		expr = re.ReplaceAllString(expr, " ")
	}
	var names []string
	for _, loc := range identifier.FindAllStringIndex(expr, -1) {
		start, end := loc[0], loc[1]
		if start > 0 && (isWord(expr[start-1]) || expr[start-1] == '.') {
			continue // the tail of a number: 1e3, 5m, 0.5
		}
		name := expr[start:end]
		call := strings.HasPrefix(strings.TrimLeft(expr[end:], " \t\n"), "(")
		if call || slices.Contains(keywords, name) {
			continue
		}
		names = append(names, name)
	}
	return names
}

func isWord(c byte) bool {
	return c == '_' || c == ':' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func TestMetricNames(t *testing.T) {
	cases := []struct {
		expr string
		want []string
	}{
		{`sum by (sink) (rate(chapar_deliveries_total{sink=~"$sink"}[$__rate_interval]))`, []string{"chapar_deliveries_total"}},
		{`histogram_quantile(0.99, sum by (sink, le) (rate(x_bucket[5m])))`, []string{"x_bucket"}},
		{`(a > 0) unless on (sink) (b offset 5m > bool 1e3)`, []string{"a", "b"}},
		{`max without (instance) (max_over_time(c[2m:30s])) == 2`, []string{"c"}},
		{`{__name__="y"}`, nil},
	}
	for _, c := range cases {
		if got := metricNames(c.expr); !slices.Equal(got, c.want) {
			t.Errorf("metricNames(%q) = %q, want %q", c.expr, got, c.want)
		}
	}
}
