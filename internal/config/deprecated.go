package config

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

// renamedKeys are top-level keys under an old name still read for one
// release, each with its new name. webhook became kenar_webhook: it is
// the receiver Divar Kenar calls back, and "webhook" is also a vendor
// (the generic signed webhook sink), which read as if the two were one.
var renamedKeys = []struct{ old, new string }{
	{"webhook", "kenar_webhook"},
}

// renameDeprecated renames, in the file's top-level mapping, each key
// written under its old name to its new one, so the rest of the checks
// (and their errors) speak of the new name only. It returns one warning
// per renamed key, and an error if a file writes both names.
func renameDeprecated(root *yaml.Node) (warnings []string, err error) {
	if len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, nil
	}
	doc := root.Content[0]
	for _, r := range renamedKeys {
		oldAt, hasNew := -1, false
		for i := 0; i+1 < len(doc.Content); i += 2 {
			switch doc.Content[i].Value {
			case r.old:
				oldAt = i
			case r.new:
				hasNew = true
			}
		}
		if oldAt < 0 {
			continue
		}
		oldKey := doc.Content[oldAt]
		if hasNew {
			// Dropped, so that it is reported once, here, not again as
			// an unknown key.
			doc.Content = append(doc.Content[:oldAt], doc.Content[oldAt+2:]...)
			return warnings, fmt.Errorf("%s: line %d: the old name of %s, which this file also sets; keep only %s", r.old, oldKey.Line, r.new, r.new)
		}
		oldKey.Value = r.new
		warnings = append(warnings, fmt.Sprintf("%s (line %d) is now named %s; the old name is read until the next release: rename it", r.old, oldKey.Line, r.new))
	}
	return warnings, nil
}
