package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
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

// syncBuffer is a bytes.Buffer safe to write from one goroutine and read
// from another.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// The emulator's banner names the config README runs it with,
// configs/local.yaml (before: configs/demo.yaml, the demo's own).
func TestEmulatorBannerNamesTheLocalConfig(t *testing.T) {
	args := []string{"emulator"}
	for _, h := range emulator.Handlers() {
		args = append(args, "-"+h.Name, "127.0.0.1:0")
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var out syncBuffer
	go func() { done <- runCommand(ctx, args, &out, io.Discard) }()
	defer func() { stop(); <-done }()
	testenv.Eventually(t, 10*time.Second, "the banner", func() bool { return strings.Contains(out.String(), "base_url") })
	if banner := out.String(); !strings.Contains(banner, "configs/local.yaml") || strings.Contains(banner, "demo.yaml") {
		t.Errorf("banner:\n%s", banner)
	}
}

// README names the Go version go.mod requires (a newer toolchain is
// fetched otherwise), and the Node.js version the JavaScript example's
// locked packages require (the highest of their engines: npm ci warns
// below it).
func TestReadmeNamesTheGoAndNodeVersions(t *testing.T) {
	read := func(p string) string {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	readme := read("../../README.md")
	goVersion := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(read("../../go.mod"))
	if goVersion == nil {
		t.Fatal("go.mod has no go directive")
	}
	if want := "Needs Go " + goVersion[1] + " or later"; !strings.Contains(readme, want) {
		t.Errorf("README does not say %q (go.mod: go %s)", want, goVersion[1])
	}
	node := 0
	for _, m := range regexp.MustCompile(`"node": ">= ?(\d+)`).FindAllStringSubmatch(read("../../examples/publish/js/package-lock.json"), -1) {
		n, _ := strconv.Atoi(m[1])
		node = max(node, n)
	}
	if node == 0 {
		t.Fatal("no node engine in the example's package-lock.json")
	}
	js := readme[strings.Index(readme, "### From JavaScript"):]
	js = js[:strings.Index(js, "```")]
	if want := fmt.Sprintf("Node.js %d or later", node); !strings.Contains(strings.Join(strings.Fields(js), " "), want) {
		t.Errorf("README's JavaScript section does not say %q:\n%s", want, js)
	}
}
