package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/sinks"
)

type cliConfig struct {
	Check cliConfigCheck `cmd:"" help:"Report every error of a config file in one pass (exit 2 if any)."`
}

type cliConfigCheck struct {
	File string `arg:"" help:"The YAML config file." placeholder:"FILE"`
	JSON bool   `help:"Print a JSON object: {file, ok, errors: [{key, message}]}."`
}

// configProblem is one error of a config file: the key to fix and what to
// write there.
type configProblem struct {
	Key     string `json:"key,omitempty"`
	Message string `json:"message"`
}

func (c *cliConfigCheck) Run(s *streams) error {
	if _, err := os.Stat(c.File); err != nil {
		return fmt.Errorf("config check: %w", err) // not a config to check: exit 1
	}
	errs, warnings := checkConfig(c.File)
	for _, w := range warnings { // stderr: the report on stdout stays as it was
		fmt.Fprintf(s.stderr, "%s: warning: %s\n", c.File, w)
	}
	problems := make([]configProblem, 0, len(errs))
	for _, e := range errs {
		problems = append(problems, splitProblem(e))
	}
	if c.JSON {
		if err := writeJSON(s.stdout, map[string]any{"file": c.File, "ok": len(problems) == 0, "errors": problems}); err != nil {
			return err
		}
	} else if len(problems) == 0 {
		fmt.Fprintf(s.stdout, "%s: ok\n", c.File)
	} else {
		for _, p := range problems {
			if p.Key != "" {
				fmt.Fprintf(s.stdout, "%s: %s: %s\n", c.File, p.Key, p.Message)
			} else {
				fmt.Fprintf(s.stdout, "%s: %s\n", c.File, p.Message)
			}
		}
	}
	if len(problems) > 0 {
		return usageError{fmt.Sprintf("%s: %d error(s)", c.File, len(problems))}
	}
	return nil
}

// checkConfig is every error of the file, one per entry: the config's own
// and the vendors' (sink settings), each key reported once; and its
// warnings (keys under an old name).
func checkConfig(file string) (msgs, warnings []string) {
	cfg, err := config.CheckFile(file)
	msgs = flatten(err)
	if cfg != nil {
		warnings = cfg.Warnings
		_, err := sinks.Build(cfg.Sinks)
	next:
		for _, m := range flatten(err) {
			key := splitProblem(m).Key
			for _, seen := range msgs {
				if k := splitProblem(seen).Key; key != "" && k != "" && (key == k || strings.HasPrefix(key, k+".") || strings.HasPrefix(key, k+"[")) {
					continue next // e.g. an unset ${VAR}, then "is required"
				}
			}
			msgs = append(msgs, cfg.Redact(m))
		}
	}
	return msgs, warnings
}

// flatten lists joined errors one per entry, each on one line.
func flatten(err error) []string {
	var out []string
	var visit func(error)
	visit = func(err error) {
		if err == nil {
			return
		}
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				visit(e)
			}
			return
		}
		var lines []string
		for _, line := range strings.Split(err.Error(), "\n") {
			if line = strings.TrimSpace(line); line != "" {
				lines = append(lines, line)
			}
		}
		out = append(out, strings.Join(lines, " "))
	}
	visit(err)
	return out
}

// splitProblem reads "key: message" when the error starts with a key path.
func splitProblem(msg string) configProblem {
	key, rest, ok := strings.Cut(msg, ": ")
	if ok && isKeyPath(key) {
		return configProblem{Key: key, Message: rest}
	}
	return configProblem{Message: msg}
}

func isKeyPath(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || strings.ContainsRune("._-[]", r)) {
			return false
		}
	}
	return true
}
