package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestNATSContext(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	if err := os.MkdirAll(filepath.Join(dir, "nats", "context"), 0o700); err != nil {
		t.Fatal(err)
	}
	ctx := `{"description": "prod", "url": "nats://prod:4222", "creds": "/creds/prod.creds", "ca": "/ca.pem", "token": "tok"}`
	if err := os.WriteFile(filepath.Join(dir, "nats", "context", "prod.json"), []byte(ctx), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig("", natsFlags{Context: "prod", TLSCA: "/flag-ca.pem"})
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.NATS
	if n.URL != "nats://prod:4222" || n.Creds != "/creds/prod.creds" || n.TLS.CAFile != "/flag-ca.pem" || n.Token.Value() != "tok" {
		t.Errorf("context not applied under the flags: %+v", n)
	}
	if _, err := loadConfig("", natsFlags{Context: "nope"}); err == nil {
		t.Error("a missing context is accepted")
	}
	if _, err := loadConfig("", natsFlags{Context: "../etc/passwd"}); exitCode(err) != 2 {
		t.Errorf("a path as context name: %v", err)
	}
}
