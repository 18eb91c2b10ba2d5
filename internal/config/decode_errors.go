package config

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// candidate is a key at a line, and its value when it is a scalar.
type candidate struct{ key, value string }

// lineCandidates lists the keys at each line, in order: a flow mapping
// ({a: 1, b: x}) has several on one line.
func lineCandidates(root *yaml.Node) map[int][]candidate {
	out := map[int][]candidate{}
	_ = walk(root, "", func(n *yaml.Node, at string) error {
		if at != "" {
			c := candidate{key: at}
			if n.Kind == yaml.ScalarNode {
				c.value = n.Value
			}
			out[n.Line] = append(out[n.Line], c)
		}
		return nil
	})
	return out
}

var (
	unknownField = regexp.MustCompile(`field (\S+) not found in type`)
	badValue     = regexp.MustCompile("cannot unmarshal \\S+ `([^`]*)`")
)

// pick is the key a yaml error at a line is about: the only one, or the
// one whose name or value the message quotes.
func pick(cs []candidate, msg string) (string, bool) {
	switch {
	case len(cs) == 0:
		return "", false
	case len(cs) == 1:
		return cs[0].key, true
	}
	if m := unknownField.FindStringSubmatch(msg); m != nil {
		for _, c := range cs {
			if c.key == m[1] || strings.HasSuffix(c.key, "."+m[1]) {
				return c.key, true
			}
		}
	}
	if m := badValue.FindStringSubmatch(msg); m != nil {
		v, cut := strings.CutSuffix(m[1], "...") // yaml shortens long values
		for _, c := range cs {
			if c.value == v || cut && strings.HasPrefix(c.value, v) {
				return c.key, true
			}
		}
	}
	return cs[len(cs)-1].key, true
}

// nameKeys rewrites yaml's "line N: …" decode errors to name the key at
// that line, which is what a person fixing the file looks for.
//
// lines maps each key to its line in the file as written (the re-encoded
// text's lines differ), to say where the key is.
func nameKeys(err error, keys map[int][]candidate, lines map[string]int) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = m
		var line int
		if _, scanErr := fmt.Sscanf(m, "line %d:", &line); scanErr == nil {
			if k, ok := pick(keys[line], m); ok {
				_, rest, _ := strings.Cut(m, ": ")
				msgs[i] = k + ": " + rest
				if l, ok := lines[k]; ok {
					msgs[i] = fmt.Sprintf("%s: line %d: %s", k, l, rest)
				}
			}
		}
		if strings.Contains(m, " not found in type ") {
			msgs[i] += "; no such key: check its spelling and level (configs/chapar.example.yaml shows every key)"
		}
		if strings.HasSuffix(m, "into time.Duration") {
			msgs[i] += "; write a duration with its unit, e.g. 0s, 500ms, 10s or 5m"
		}
	}
	return fmt.Errorf("config errors:\n  %s", strings.Join(msgs, "\n  "))
}
