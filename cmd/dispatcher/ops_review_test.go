package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// Stream ages JetStream refuses: a max_age shorter than
// streams.duplicate_window (a 5m max_age for a test deployment, with the
// 10m default window), or a negative one. config check said ok, and
// dispatcher run never started: its bind took the server's refusal
// (an API error 500, err_code 10052) for a cluster not ready yet and
// waited for ever, logging "JetStream not ready; waiting", /readyz 503,
// naming no key. Each must be refused by config check, and by run at
// once, naming the key.
func TestStreamAgesTheServerRefusesAreRefusedAtStart(t *testing.T) {
	e := testenv.New(t)
	sink := fmt.Sprintf(`
admin: {listen: ""}
sinks:
  - {name: chabok, vendor: chabok, base_url: %s, settings: {app_id: demoapp, access_token: tok}}
routes:
  - sinks: [chabok]
`, e.URL[emulator.Chabok])
	for i, tc := range []struct{ streams, key string }{
		{"max_age: 5m", "streams.max_age"},
		{"max_age: -1h", "streams.max_age"},
		{"dead_letter_max_age: 1m", "streams.dead_letter_max_age"},
		{"dead_letter_max_age: -24h", "streams.dead_letter_max_age"},
	} {
		t.Run(tc.streams, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "chapar.yaml")
			cfg := fmt.Sprintf("streams: {subject_prefix: ages%d, %s}\n", i, tc.streams) + sink
			if err := os.WriteFile(file, []byte(cfg), 0o600); err != nil {
				t.Fatal(err)
			}
			code, out, _ := runNoPanic(t, []string{"config", "check", file})
			if code != 2 || !strings.Contains(out, tc.key+": ") {
				t.Errorf("config check: exit %d, want 2 naming %s:\n%s", code, tc.key, out)
			}
			code, _, errOut := runNoPanic(t, []string{"run", "--config", file, "--server", e.Server.ClientURL()})
			if code == 0 || !strings.Contains(lastLine(errOut), tc.key+": ") {
				t.Errorf("run: exit %d, its last line does not name %s:\n%s", code, tc.key, lastLine(errOut))
			}
		})
	}
}
