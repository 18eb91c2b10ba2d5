package app_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/internal/app"
)

// A route's filter is compiled by config check (and so by run, the same
// validator): an expression that does not compile is refused, naming the
// route's key, where in the expression, and the fix; one that compiles is
// accepted.
func TestConfigCheckCompilesRouteFilters(t *testing.T) {
	const sinks = `sinks:
  - {name: hook, vendor: webhook, settings: {url: "http://127.0.0.1:1/x"}}
routes:
  - {types: [chapar.track], sinks: [hook]}
`
	tests := []struct {
		name, route string
		want        []string // every part of the problem; none: accepted
	}{
		{"data field", `  - {sinks: [hook], filter: 'data.properties.amount >= 1000000'}`, nil},
		{"source prefix", `  - {sinks: [hook], filter: 'source startsWith "shop/"'}`, nil},
		{"a block of lines", "  - sinks: [hook]\n    filter: |\n      type == \"chapar.track\"\n      && data.user.country == \"IR\"", nil},
		{"syntax error", `  - {sinks: [hook], filter: 'data.amount >= '}`,
			[]string{`routes[1].filter: "data.amount >= " does not compile: unexpected token EOF (at column 15)`, "docs/sinks.md"}},
		{"unknown attribute", `  - {sinks: [hook], filter: 'sorce == "shop"'}`,
			[]string{`routes[1].filter: "sorce == \"shop\"" does not compile: unknown name sorce (at column 1)`, "source"}},
		{"not a condition", `  - {sinks: [hook], filter: 'subject'}`,
			[]string{`routes[1].filter: "subject" does not compile: expected bool, but got string`}},
		{"empty", `  - {sinks: [hook], filter: ' '}`,
			[]string{`routes[1].filter: is empty; remove the key to match every event, or write a condition`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "chapar.yaml")
			if err := os.WriteFile(file, []byte(sinks+tt.route+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := app.CheckConfig(app.ConfigSource{File: file, LookupEnv: func(string) (string, bool) { return "", false }})
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
}
