package deploy

import (
	"fmt"
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
// series set), and every label it groups, matches or names in a legend is
// one those metrics carry, so a renamed metric or label breaks this test,
// not a dashboard or an alert in production.
func TestDashboardsAndAlertsQueryExportedMetrics(t *testing.T) {
	exported := metricstest.Labels(metricstest.Scrape(t))
	sources := map[string][]Query{} // file → its queries
	dashboards, err := filepath.Glob("grafana/*.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range dashboards {
		if sources[f], err = DashboardQueries(f); err != nil {
			t.Fatal(err)
		}
	}
	rules, err := filepath.Glob("prometheus/*.rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range rules {
		sources[f] = ruleQueries(t, f)
	}
	if len(dashboards) == 0 || len(rules) == 0 {
		t.Fatalf("found %d dashboards and %d rule files; want both", len(dashboards), len(rules))
	}
	for file, queries := range sources {
		if len(queries) == 0 {
			t.Errorf("%s: no PromQL expressions found", file)
		}
		for _, q := range queries {
			names := metricNames(q.Expr)
			if len(names) == 0 {
				t.Errorf("%s: %q queries no metric", file, q.Expr)
			}
			// Prometheus adds these to every scraped series.
			carried := map[string]bool{"instance": true, "job": true}
			for _, n := range names {
				labels, ok := exported[n]
				if !ok {
					t.Errorf("%s: %q queries %s, which Chapar does not export", file, q.Expr, n)
				}
				for l := range labels {
					carried[l] = true
				}
			}
			for _, l := range append(labelNames(q.Expr), legendLabels(q.Legend)...) {
				if !carried[l] {
					t.Errorf("%s: %q uses label %q, which none of %v carries", file, q.Expr, l, names)
				}
			}
		}
	}
}

// legendLabels are the labels a Grafana legend format names: {{sink}}.
func legendLabels(legend string) []string {
	var labels []string
	for _, m := range legendLabel.FindAllStringSubmatch(legend, -1) {
		labels = append(labels, m[1])
	}
	return labels
}

// ruleQueries are a Prometheus rule file's expressions.
func ruleQueries(t *testing.T, file string) []Query {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []struct {
				Expr string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readStrict(t, file, func(b []byte) error { return yaml.Unmarshal(b, &f) })
	var queries []Query
	for _, g := range f.Groups {
		for _, r := range g.Rules {
			queries = append(queries, Query{Expr: r.Expr})
		}
	}
	return queries
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
	stringLit = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'`)
	selector  = regexp.MustCompile(`\{[^}]*\}`)
	notMetric = []*regexp.Regexp{
		stringLit,
		selector,
		regexp.MustCompile(`\[[^\]]*\]`),
		otherVar,
		regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`),
	}
	legendLabel = regexp.MustCompile(`\{\{\s*(\w+)\s*\}\}`)
	// Label names in matchers ({sink=~"x"}) and in the lists of by,
	// without, on, ignoring, group_left and group_right.
	matcherLabel = regexp.MustCompile(`([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)`)
	labelList    = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)`)
	identifier   = regexp.MustCompile(`[a-zA-Z_:][\w:]*`)
	keywords     = []string{"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "inf", "nan", "Inf", "NaN"}
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

// labelNames are the label names a PromQL expression matches on or
// groups by (not __name__).
func labelNames(expr string) []string {
	expr = stringLit.ReplaceAllString(expr, `""`) // values, not names
	var labels []string
	for _, sel := range selector.FindAllString(expr, -1) {
		for _, m := range matcherLabel.FindAllStringSubmatch(sel, -1) {
			if m[1] != "__name__" {
				labels = append(labels, m[1])
			}
		}
	}
	for _, m := range labelList.FindAllStringSubmatch(expr, -1) {
		for _, l := range strings.Split(m[1], ",") {
			if l = strings.TrimSpace(l); l != "" {
				labels = append(labels, l)
			}
		}
	}
	return labels
}

func isWord(c byte) bool {
	return c == '_' || c == ':' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
}

func TestLabelNames(t *testing.T) {
	cases := []struct {
		expr string
		want []string
	}{
		{`sum by (sink, le) (rate(x_bucket{sink=~"$sink",outcome!="ok"}[5m]))`, []string{"sink", "outcome", "sink", "le"}},
		{`a{reason="by (x)"} unless on(sink) b`, []string{"reason", "sink"}},
		{`{__name__="y"}`, nil},
	}
	for _, c := range cases {
		if got := labelNames(c.expr); !slices.Equal(got, c.want) {
			t.Errorf("labelNames(%q) = %q, want %q", c.expr, got, c.want)
		}
	}
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

// Dashboard queries become recording rules promtool can parse: Grafana's
// variables replaced, one rule per query, in order.
func TestRecordingRules(t *testing.T) {
	b, err := RecordingRules([]Query{
		{Expr: `sum by (sink) (rate(x_total{sink=~"$sink"}[$__rate_interval]))`},
		{Expr: `rate(y{a=~"${datasource}"}[$__range])`},
	})
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Groups []struct {
			Rules []struct {
				Record string `yaml:"record"`
				Expr   string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	want := []string{`sum by (sink) (rate(x_total{sink=~".*"}[5m]))`, `rate(y{a=~".*"}[5m])`}
	if len(f.Groups) != 1 || len(f.Groups[0].Rules) != len(want) {
		t.Fatalf("rules: %s", b)
	}
	for i, r := range f.Groups[0].Rules {
		if r.Expr != want[i] || r.Record != fmt.Sprintf("dashboard:query_%d", i+1) {
			t.Errorf("rule %d = %+v, want expr %q", i, r, want[i])
		}
	}
}
