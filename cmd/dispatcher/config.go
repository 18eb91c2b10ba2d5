package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/chapar-dev/chapar/internal/app"
)

type cliConfig struct {
	Check cliConfigCheck `cmd:"" help:"Report every error of a config file in one pass (exit 2 if any)."`
}

type cliConfigCheck struct {
	File string `arg:"" help:"The YAML config file." placeholder:"FILE"`
	JSON bool   `help:"Print a JSON object: {file, ok, errors: [{key, message}], warnings: [{key, message}]}."`
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
	// The one validator dispatcher run starts with: what it reports, run
	// refuses, in the same words.
	cfg, err := app.CheckConfig(app.ConfigSource{File: c.File, LookupEnv: os.LookupEnv})
	var ce *app.ConfigError
	if err != nil && !errors.As(err, &ce) {
		return fmt.Errorf("config check: %w", err)
	}
	problems := []configProblem{}
	if ce != nil {
		for _, p := range ce.Problems {
			key, msg := app.ProblemKey(p)
			problems = append(problems, configProblem{Key: key, Message: msg})
		}
	}
	warnings := []configProblem{}
	if cfg != nil {
		for _, w := range cfg.Warnings() {
			key, msg := app.ProblemKey(w)
			warnings = append(warnings, configProblem{Key: key, Message: msg})
		}
	}
	if c.JSON {
		if err := writeJSON(s.stdout, map[string]any{"file": c.File, "ok": len(problems) == 0, "errors": problems, "warnings": warnings}); err != nil {
			return err
		}
	} else {
		for _, w := range warnings {
			fmt.Fprintf(s.stderr, "%s: warning: %s\n", c.File, w.line())
		}
		if len(problems) == 0 {
			fmt.Fprintf(s.stdout, "%s: ok\n", c.File)
		}
		for _, p := range problems {
			fmt.Fprintf(s.stdout, "%s: %s\n", c.File, p.line())
		}
	}
	if len(problems) > 0 {
		return usageError{fmt.Sprintf("%s: %d error(s)", c.File, len(problems))}
	}
	return nil
}

func (p configProblem) line() string {
	if p.Key == "" {
		return p.Message
	}
	return p.Key + ": " + p.Message
}
