package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A config with the Kenar receiver under its old key, webhook: `config
// check` says ok on stdout and warns on stderr, naming the new key.
func TestConfigCheckWarnsOfTheOldWebhookKey(t *testing.T) {
	file := filepath.Join(t.TempDir(), "chapar.yaml")
	if err := os.WriteFile(file, []byte("webhook: {listen: \":8080\", identification_key: k}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := runCommand(context.Background(), []string{"config", "check", file}, &out, &errOut); err != nil {
		t.Fatalf("config check: %v\n%s%s", err, out.String(), errOut.String())
	}
	if got := out.String(); got != file+": ok\n" {
		t.Errorf("stdout %q", got)
	}
	if want := "warning: webhook (line 1) is now named kenar_webhook"; !strings.Contains(errOut.String(), want) {
		t.Errorf("stderr %q lacks %q", errOut.String(), want)
	}
}
