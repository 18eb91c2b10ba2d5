package app

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// ConfigSource is where a process's config comes from.
type ConfigSource struct {
	// File is the YAML file; empty is the built-in defaults.
	File string
	// LookupEnv resolves ${VAR} references and $CHAPAR_ADMIN_TOKEN
	// (os.LookupEnv when nil).
	LookupEnv func(string) (string, bool)
	// Override edits the config as decoded, before it is validated: the
	// command line's connection flags.
	Override func(*config.Config)
}

// ConfigError is every problem of a config, one per entry, each "key:
// message" (or a message alone), with no secret in it.
type ConfigError struct {
	File     string
	Problems []string
}

// Error is one line per problem, each led by the file, as config check
// prints them.
func (e *ConfigError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = e.label() + ": " + p
	}
	return strings.Join(lines, "\n")
}

func (e *ConfigError) label() string {
	if e.File == "" {
		return "config"
	}
	return e.File
}

// LoadConfig reads, expands, defaults and validates the config's own keys:
// what the commands that only talk to NATS (dlq, sinks) need.
func LoadConfig(src ConfigSource) (*config.Config, error) {
	return loadConfig(src, false)
}

// CheckConfig is the one validator: everything dispatcher run checks
// before it serves, reported in one pass, each problem once, in the words
// config check prints. Besides the config's own keys, it builds the
// sinks (each vendor's settings) and reads the admin token. A config it
// accepts is one run can start with (short of what needs the broker: the
// server's max_payload, the streams). The config is nil only when the
// file cannot be read as YAML.
func CheckConfig(src ConfigSource) (*config.Config, error) {
	return loadConfig(src, true)
}

func loadConfig(src ConfigSource, whole bool) (*config.Config, error) {
	lookupEnv := src.LookupEnv
	if lookupEnv == nil {
		lookupEnv = os.LookupEnv
	}
	var raw []byte
	if src.File != "" {
		var err error
		if raw, err = os.ReadFile(src.File); err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
	}
	cfg, err := config.CheckWith(raw, lookupEnv, src.Override)
	var list problemList
	list.add(err)
	if cfg != nil && whole {
		list.add(cfg.ReadAdminToken(lookupEnv))
		_, err := sinks.Build(cfg.Sinks)
		list.add(err)
		list.add(routeTypeErrors(cfg, sinks.Lookup))
	}
	if len(list.problems) == 0 {
		return cfg, nil
	}
	if cfg != nil {
		for i, p := range list.problems {
			list.problems[i] = cfg.Redact(p)
		}
	}
	return cfg, &ConfigError{File: src.File, Problems: list.problems}
}

// problemList is problems one per entry, each on one line, dropping one
// whose key is under a key already reported (an unset ${VAR} leaves the
// key empty, and the vendor would say "is required" too).
type problemList struct{ problems []string }

func (l *problemList) add(err error) {
	if err == nil {
		return
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			l.add(e)
		}
		return
	}
	var lines []string
	for _, line := range strings.Split(err.Error(), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			lines = append(lines, line)
		}
	}
	msg := strings.Join(lines, " ")
	key, _ := ProblemKey(msg)
	for _, seen := range l.problems {
		k, _ := ProblemKey(seen)
		if key != "" && k != "" && (key == k || strings.HasPrefix(key, k+".") || strings.HasPrefix(key, k+"[")) {
			return
		}
	}
	l.problems = append(l.problems, msg)
}

// ProblemKey splits "key: message" when the problem starts with a key path
// (sinks[0].settings.app_id); key is empty otherwise.
func ProblemKey(problem string) (key, message string) {
	k, rest, ok := strings.Cut(problem, ": ")
	if ok && isKeyPath(k) {
		return k, rest
	}
	return "", problem
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

// routeTypeErrors refuses a route that names an event type and sends it to
// a vendor sink that has no call for that type: every such event would be
// dead-lettered unsupported_event. One problem per routes[i].types[j],
// naming each sink that cannot take it. A route without types (a
// catch-all) is not refused: it sends many types, and what a vendor
// cannot take of them is dead-lettered at delivery. Unknown sinks, vendors
// and malformed types are reported by their own checks.
func routeTypeErrors(cfg *config.Config, lookup func(string) (sinks.Vendor, bool)) error {
	vendorOf := make(map[string]sinks.Vendor, len(cfg.Sinks))
	for _, s := range cfg.Sinks {
		if v, ok := lookup(s.Vendor); ok {
			vendorOf[s.Name] = v
		}
	}
	var errs []error
	for i, r := range cfg.Routes {
		for j, t := range r.Types {
			if envelope.CheckType(t) != nil {
				continue
			}
			var refused []string
			for k, name := range r.Sinks {
				if v, ok := vendorOf[name]; ok && !v.Takes(t) {
					refused = append(refused, fmt.Sprintf("sink %s (routes[%d].sinks[%d]), of vendor %s, which takes only %s",
						name, i, k, v.Name, strings.Join(v.Types, ", ")))
				}
			}
			if len(refused) > 0 {
				errs = append(errs, fmt.Errorf("routes[%d].types[%d]: %q is sent to %s; every such event would be dead-lettered unsupported_event: "+
					"send this type to sinks that take it (a webhook sink takes any type) in a route of its own",
					i, j, t, strings.Join(refused, ", and to ")))
			}
		}
	}
	return errors.Join(errs...)
}
