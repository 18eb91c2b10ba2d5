package config

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// AdminTokenEnv is the environment variable the admin token is read from
// when admin.token_file is not set.
const AdminTokenEnv = "CHAPAR_ADMIN_TOKEN"

// MinAdminTokenBytes is the shortest admin token accepted: a guessable
// token would be worse than none, as it reads as protection.
const MinAdminTokenBytes = 16

// Token is the admin token: admin.token_file's content (surrounding
// whitespace dropped) or else $CHAPAR_ADMIN_TOKEN; empty when neither is
// set. Errors name the key and the fix, never the token.
func (a Admin) Token(lookupEnv func(string) (string, bool)) (Secret, error) {
	var tok, from string
	if a.TokenFile != "" {
		raw, err := os.ReadFile(a.TokenFile)
		if err != nil {
			return "", fmt.Errorf("admin.token_file: %w; point it at a readable file holding the token, or unset it", err)
		}
		tok, from = strings.TrimSpace(string(raw)), "admin.token_file"
	} else if v, ok := lookupEnv(AdminTokenEnv); ok {
		tok, from = strings.TrimSpace(v), "$"+AdminTokenEnv
	}
	if from != "" && len(tok) < MinAdminTokenBytes {
		// The key first, so that config check reads it as the key.
		return "", fmt.Errorf("%s: the admin token is %d bytes; use at least %d random bytes, e.g. openssl rand -hex 32",
			from, len(tok), MinAdminTokenBytes)
	}
	return Secret(tok), nil
}

// ConsoleBeyondLoopback says whether the console is served where others
// than this host's users can reach it: admin.listen's host is not a
// loopback address or "localhost" (an empty host or 0.0.0.0 is every
// interface; a name other than localhost may resolve anywhere).
func (a Admin) ConsoleBeyondLoopback() bool {
	if !a.Console.Enabled || a.Listen == "" {
		return false
	}
	host, _, err := net.SplitHostPort(a.Listen)
	if err != nil {
		return true
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// CheckConsoleToken refuses a console beyond loopback without the admin
// token: its pages show dead letters' envelopes and headers (user data),
// so there every page asks for the token (docs/console.md).
func (a Admin) CheckConsoleToken(tok Secret) error {
	if !a.ConsoleBeyondLoopback() || tok.Value() != "" {
		return nil
	}
	return fmt.Errorf("admin.console.enabled: the console is served beyond loopback (admin.listen %q) with no admin token, "+
		"so anyone reaching it could read dead letters' envelopes; set admin.token_file (or $%s) and every console page asks for it, "+
		"bind admin.listen to 127.0.0.1, or disable the console", a.Listen, AdminTokenEnv)
}

// ReadAdminToken reads and checks the admin token when the console is
// enabled (it is used nowhere else): a token file that cannot be read or a
// token too short fails the start with its key, not the first replay, and
// a console beyond loopback needs one. AdminToken is then the token.
func (c *Config) ReadAdminToken(lookupEnv func(string) (string, bool)) error {
	c.adminToken = ""
	if !c.Admin.Console.Enabled {
		return nil
	}
	tok, err := c.Admin.Token(lookupEnv)
	if err != nil {
		return err
	}
	if err := c.Admin.CheckConsoleToken(tok); err != nil {
		return err
	}
	c.adminToken = tok
	return nil
}

// AdminToken is the admin token ReadAdminToken read: empty without a
// console or without a token.
func (c *Config) AdminToken() Secret { return c.adminToken }
