package main

import (
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The version is stamped by the linker as the release build does it, and
// every place that shows it shows the same string.
func TestVersionStampedByLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	bin := filepath.Join(t.TempDir(), "dispatcher")
	build := exec.Command("go", "build", "-o", bin,
		"-ldflags", "-X github.com/chapar-dev/chapar/internal/buildinfo.version=v9.8.7-test", ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin, "--version").Output()
	if err != nil || strings.TrimSpace(string(out)) != "chapar dispatcher v9.8.7-test" {
		t.Errorf("--version: %v %q", err, out)
	}
	out, err = exec.Command(bin, "version", "--json").Output()
	var v struct{ Version string }
	if err != nil || json.Unmarshal(out, &v) != nil || v.Version != "v9.8.7-test" {
		t.Errorf("version --json: %v %s", err, out)
	}
}
