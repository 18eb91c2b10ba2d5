package sinks_test

import (
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/internal/sinks"
)

// The vendor table of docs/sinks.md is the registry's: a row per vendor
// with every settings key, and a section headed `vendor: <name>`.
func TestDocsTableIsTheRegistry(t *testing.T) {
	raw, err := os.ReadFile("../../docs/sinks.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	_, table, _ := strings.Cut(doc, "| vendor (`sinks[i].vendor`) |")
	table, _, _ = strings.Cut(table, "\n\n")
	rows := map[string]string{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z0-9-]+)` \\|(.*)$").FindAllStringSubmatch(table, -1) {
		rows[m[1]] = m[2]
	}
	var registered []string
	for _, v := range sinks.Vendors() {
		if v.Name == "acme-push" {
			continue // the walk-through's vendor, registered by a test file
		}
		registered = append(registered, v.Name)
		row, ok := rows[v.Name]
		if !ok {
			t.Errorf("docs/sinks.md: no table row for vendor %s", v.Name)
			continue
		}
		for _, k := range v.Settings {
			if !strings.Contains(row, "`"+k+"`") {
				t.Errorf("docs/sinks.md: the row of %s does not list setting %s", v.Name, k)
			}
		}
		if !strings.Contains(doc, "`vendor: "+v.Name+"`\n") {
			t.Errorf("docs/sinks.md: no section headed `vendor: %s`", v.Name)
		}
	}
	for name := range rows {
		if !slices.Contains(registered, name) {
			t.Errorf("docs/sinks.md: a table row for %s, which is not a registered vendor", name)
		}
	}
}
