package dispatch_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docs/design.md's table of internal/dispatch ("One message, top to
// bottom") names every file of the package, so a reader finds each one's
// job there; and the words the engine uses of itself are in its
// vocabulary.
func TestDesignDocNamesEveryFileAndWord(t *testing.T) {
	raw, err := os.ReadFile("../../docs/design.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	start := strings.Index(doc, "## One message, top to bottom (`internal/dispatch`)")
	if start < 0 {
		t.Fatal(`design.md has no "One message, top to bottom" section`)
	}
	table := doc[start:]
	if end := strings.Index(table, "\nThe steps"); end >= 0 {
		table = table[:end]
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		if !strings.Contains(table, "`"+f+"`") {
			t.Errorf("docs/design.md's table of internal/dispatch does not name %s", f)
		}
	}
	words := doc[:strings.Index(doc, "\n## The layout")]
	for _, w := range []string{"hand back", "settle", "gate", "verdict", "lane", "origin", "hold"} {
		if !regexp.MustCompile(`(?m)^\| \*\*` + w + `\*\* \|`).MatchString(words) {
			t.Errorf("docs/design.md's words lack %q", w)
		}
	}
}
