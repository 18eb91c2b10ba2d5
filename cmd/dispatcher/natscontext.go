package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"

	"github.com/chapar-dev/chapar/internal/config"
)

// natsContext is the part of a natscli context (nats context save NAME)
// that says how to connect.
type natsContext struct {
	URL      string `json:"url"`
	User     string `json:"user"`
	Password string `json:"password"`
	Token    string `json:"token"`
	Creds    string `json:"creds"`
	NKey     string `json:"nkey"`
	Cert     string `json:"cert"`
	Key      string `json:"key"`
	CA       string `json:"ca"`
}

var contextName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// loadNATSContext reads natscli's context NAME from
// $XDG_CONFIG_HOME/nats/context/NAME.json (~/.config by default).
func loadNATSContext(name string) (*natsContext, error) {
	if !contextName.MatchString(name) || name == "." || name == ".." {
		return nil, usageError{fmt.Sprintf("--context: %q is not a context name", name)}
	}
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return nil, fmt.Errorf("--context %s: %w", name, err)
		}
		dir = filepath.Join(home, ".config")
	}
	file := filepath.Join(dir, "nats", "context", name+".json")
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("--context %s: %w (nats context ls lists the contexts)", name, err)
	}
	var c natsContext
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("--context %s: %s: %w", name, file, err)
	}
	return &c, nil
}

// apply fills what the flags left empty from the context.
func (c *natsContext) apply(n *natsFlags, cfg *config.NATS) {
	for _, f := range []struct {
		flag *string
		ctx  string
	}{
		{&n.Server, c.URL}, {&n.Creds, c.Creds}, {&n.NKey, c.NKey},
		{&n.TLSCert, c.Cert}, {&n.TLSKey, c.Key}, {&n.TLSCA, c.CA},
	} {
		if *f.flag == "" {
			*f.flag = f.ctx
		}
	}
	if c.User != "" {
		cfg.User, cfg.Password = c.User, config.Secret(c.Password)
	}
	if c.Token != "" {
		cfg.Token = config.Secret(c.Token)
	}
}
