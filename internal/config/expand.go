package config

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

var reference = regexp.MustCompile(`\$\{([^}]*)\}`)

// walk visits every node under n with its key path (sinks[0].settings.app_id).
func walk(n *yaml.Node, at string, fn func(n *yaml.Node, at string) error) error {
	if err := fn(n, at); err != nil {
		return err
	}
	for i, c := range n.Content {
		key := at
		switch n.Kind {
		case yaml.SequenceNode:
			key = fmt.Sprintf("%s[%d]", at, i)
		case yaml.MappingNode:
			if i%2 == 0 {
				continue // a key, not a value
			}
			key = n.Content[i-1].Value
			if at != "" {
				key = at + "." + key
			}
		}
		if err := walk(c, key, fn); err != nil {
			return err
		}
	}
	return nil
}

// expand replaces ${VAR} and ${file:/path} in every scalar value, so a
// secret is never written into the file and never YAML-parsed as code.
//
// Each value a reference brought in is recorded in resolved (value → the
// reference), so that errors can say ${VAR} instead of echoing a secret.
func expand(root *yaml.Node, lookupEnv func(string) (string, bool), resolved map[string]string) error {
	var all []error // every reference that cannot be resolved, not only the first
	_ = walk(root, "", func(n *yaml.Node, at string) error {
		if n.Kind != yaml.ScalarNode {
			return nil
		}
		var errs []error
		out := reference.ReplaceAllStringFunc(n.Value, func(ref string) string {
			name := reference.FindStringSubmatch(ref)[1]
			if file, ok := strings.CutPrefix(name, "file:"); ok {
				b, err := os.ReadFile(file)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: cannot read secret file: %w", at, err))
					return ""
				}
				v := strings.TrimSpace(string(b))
				resolved[v] = ref
				return v
			}
			v, ok := lookupEnv(name)
			if !ok {
				errs = append(errs, fmt.Errorf("%s: environment variable %s is not set; export it or remove the reference", at, name))
			}
			resolved[v] = ref
			return v
		})
		all = append(all, errs...)
		if out != n.Value {
			n.Value = out
			n.Tag = "!!str"
			n.Style = yaml.DoubleQuotedStyle
		}
		return nil
	})
	return errors.Join(all...)
}
