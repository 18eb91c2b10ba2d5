package main

import (
	"context"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// docs/cli.md names every command and every flag the binary has.
func TestCLIDocsCoverEveryCommandAndFlag(t *testing.T) {
	raw, err := os.ReadFile("../../docs/cli.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(raw)
	var c cli
	parser, err := newParser(&c, &streams{stdout: io.Discard, stderr: io.Discard}, context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var visit func(n *kong.Node)
	visit = func(n *kong.Node) {
		if n.Type == kong.CommandNode && !n.Hidden {
			if path := n.FullPath(); !strings.Contains(doc, "`"+path) {
				t.Errorf("docs/cli.md does not show %s", path)
			}
		}
		for _, f := range n.Flags {
			if !f.Hidden && f.Name != "help" && !strings.Contains(doc, "--"+f.Name) {
				t.Errorf("docs/cli.md does not mention --%s (%s)", f.Name, n.FullPath())
			}
		}
		for _, child := range n.Children {
			visit(child)
		}
	}
	visit(parser.Model.Node)
}
