package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/internal/config"
)

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"nats://user:pass@host:4222":                  "nats://user:***@host:4222",
		"nats://s3cr3t-token@host:4222":               "nats://***@host:4222",
		"nats://host:4222":                            "nats://host:4222",
		"nats://a:p1@n1:4222,nats://b:p2@n2:4222":     "nats://a:***@n1:4222,nats://b:***@n2:4222",
		"nats://a:p1@n1:4222, nats://n2:4222":         "nats://a:***@n1:4222, nats://n2:4222",
		"tls://u:p%40ss@host":                         "tls://u:***@host",
		"nats://u:pa ss@ho st":                        "nats://***@ho st",
		"https://user:pw@example.com/api?x=1":         "https://user:***@example.com/api?x=1",
		"":                                            "",
		"127.0.0.1:4222":                              "127.0.0.1:4222",
		"nats://user:pass@host:4222/path#frag":        "nats://user:***@host:4222/path#frag",
		"nats://%7Bweird%7D:pass@host":                "nats://%7Bweird%7D:***@host",
		"nats://user:pass@[::1]:4222":                 "nats://user:***@[::1]:4222",
		"nats://user:pass@host:4222,nats://host2:999": "nats://user:***@host:4222,nats://host2:999",
		// A query parameter that reads as a credential (issue 22).
		"https://example.com/api?api_key=Zk9&region=eu":    "https://example.com/api?api_key=***&region=eu",
		"https://u:pw@example.com/api?x=1&Token=Zk9":       "https://u:***@example.com/api?x=1&Token=***",
		"https://example.com/api?page=2&design=a#frag":     "https://example.com/api?page=2&design=a#frag",
		"https://example.com/api?client_sig=Zk9&sort=desc": "https://example.com/api?client_sig=***&sort=desc",
	} {
		if got := config.RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// A secret put in a key that is not a secret (by mistake) is never echoed
// by the errors about that key: they say the reference instead.
func TestErrorsDoNotEchoSecrets(t *testing.T) {
	raw := `
nats: {url: "${NATS_SECRET}"}
streams: {subject_prefix: "${NATS_SECRET}", storage: "${NATS_SECRET}"}
dispatcher: {log_format: "${file:` + secretFile(t) + `}"}
sinks:
  - {name: "${NATS_SECRET}", vendor: chabok, base_url: "${NATS_SECRET}"}
`
	cfg, err := config.Check([]byte(raw), env(map[string]string{"NATS_SECRET": "hunter2-Very-Secret"}))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, leak := range []string{"hunter2-Very-Secret", "file-secret-xyz"} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("an error echoes the secret %q:\n%v", leak, err)
		}
	}
	for _, want := range []string{`sinks[0].name: "${NATS_SECRET}"`, `streams.storage: is "${NATS_SECRET}"`, "dispatcher.log_format: is \"${file:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors do not say %q:\n%v", want, err)
		}
	}
	if got := cfg.Redact("sent hunter2-Very-Secret"); got != "sent ${NATS_SECRET}" {
		t.Errorf("Redact: %q", got)
	}
	if len(strings.Split(err.Error(), "\n")) < 4 {
		t.Errorf("the errors are no longer one per line:\n%v", err)
	}
}

func secretFile(t *testing.T) string {
	f := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(f, []byte("file-secret-xyz\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}
