package config

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Check is Parse that goes on after a problem: it reports every error of
// the file in one pass (unresolved references, keys of the wrong type or
// unknown, invalid values), each once, and returns the config as far as it
// could be read, so that the callers can check the sinks' vendor settings
// too. The config is nil only when the file is not YAML at all.
func Check(raw []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	return CheckWith(raw, lookupEnv, nil)
}

// CheckWith is Check with edit applied to the config as decoded, before
// it is validated: the command line's connection flags, which replace the
// file's nats keys, are checked in the same pass.
func CheckWith(raw []byte, lookupEnv func(string) (string, bool), edit func(*Config)) (*Config, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil {
		return nil, fmt.Errorf("not valid YAML: %w", err)
	}
	warnings, renameErr := renameDeprecated(&root)
	lines := map[string]int{} // each key's line in the file as written
	for line, cs := range lineCandidates(&root) {
		for _, c := range cs {
			if l, ok := lines[c.key]; !ok || line < l {
				lines[c.key] = line
			}
		}
	}
	var errs errorList
	resolved := map[string]string{}
	errs.add(expand(&root, lookupEnv, resolved))
	cfg := Default()
	cfg.resolved = resolved
	cfg.renamed = warnings
	errs.add(renameErr)
	if len(root.Content) > 0 {
		var buf bytes.Buffer
		enc := yaml.NewEncoder(&buf)
		if err := enc.Encode(&root); err != nil {
			return nil, fmt.Errorf("re-encode: %w", err)
		}
		// Errors carry lines of the re-encoded text: map those to keys.
		var keys map[int][]candidate
		var again yaml.Node
		if yaml.Unmarshal(buf.Bytes(), &again) == nil {
			keys = lineCandidates(&again)
		}
		// sink_defaults is decoded over the built-in defaults, so only the
		// keys it writes change; sinks are decoded again below over the
		// resolved defaults.
		dec := yaml.NewDecoder(&buf)
		dec.KnownFields(true)
		decoded := true
		if err := dec.Decode(cfg); err != nil {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return nil, fmt.Errorf("%w (see configs/chapar.example.yaml for every key)", err)
			}
			// yaml decodes what it can around a type error: go on, to
			// report the other keys' problems too.
			decoded = false
			errs.add(nameKeys(err, keys, lines))
		}
		if err := cfg.resolveSinks(&root); err != nil && decoded {
			errs.add(err) // after a type error, the same error again
		}
	}
	if edit != nil {
		edit(cfg)
	}
	errs.add(cfg.Validate())
	if err := errs.join(cfg.Redact); err != nil {
		return cfg, err
	}
	return cfg, nil
}

// Redact replaces, in s, every value that a ${VAR} or ${file:…} reference
// brought into the config with the reference itself: an error about a key
// never echoes a secret, even one written in a key that is not a secret.
// Values shorter than 4 characters are left (they would mangle the text,
// and are no secret).
func (c *Config) Redact(s string) string {
	if c == nil || len(c.resolved) == 0 {
		return s
	}
	vals := make([]string, 0, len(c.resolved))
	for v := range c.resolved {
		if len(v) >= 4 {
			vals = append(vals, v)
		}
	}
	// Longest first, so a secret that contains another is replaced whole.
	sort.Slice(vals, func(i, j int) bool { return len(vals[i]) > len(vals[j]) })
	for _, v := range vals {
		s = strings.ReplaceAll(s, v, c.resolved[v])
		if len(v) > 10 {
			// yaml's type errors quote a long value's first 7 characters.
			s = strings.ReplaceAll(s, "`"+v[:7]+"...`", "`"+c.resolved[v]+"`")
		}
	}
	return s
}

// errorList collects errors, one per line, and drops an error about a key
// that already has one (an unresolved ${VAR} leaves the key empty, and
// "is required" would follow).
type errorList struct {
	errs []error
	keys []string
}

func (l *errorList) add(err error) {
	if err == nil {
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			l.add(e)
		}
		return
	}
	msg := err.Error()
	if rest, ok := strings.CutPrefix(msg, "config errors:\n  "); ok {
		// nameKeys's list: one error per line.
		for _, line := range strings.Split(rest, "\n  ") {
			l.add(errors.New(line))
		}
		return
	}
	key, _, _ := strings.Cut(msg, ": ")
	for _, k := range l.keys {
		if key == k || strings.HasPrefix(key, k+".") || strings.HasPrefix(key, k+"[") {
			return
		}
	}
	if isKey(key) {
		l.keys = append(l.keys, key)
	}
	l.errs = append(l.errs, err)
}

// join is every error, each passed through redact.
func (l *errorList) join(redact func(string) string) error {
	out := make([]error, len(l.errs))
	for i, err := range l.errs {
		out[i] = errors.New(redact(err.Error()))
	}
	return errors.Join(out...)
}

// isKey says whether s reads as a key path: sinks[0].settings.app_id.
func isKey(s string) bool {
	if s == "" || strings.HasPrefix(s, "line ") {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("._-[]", r)) {
			return false
		}
	}
	return true
}
