package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/configs"
	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/sinks"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestShippedConfigsLoad(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "kenar-token")
	if err := os.WriteFile(secret, []byte("tok-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../../configs/chapar.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	raw = []byte(strings.ReplaceAll(string(raw), "/run/secrets/kenar-token", secret))
	vars := map[string]string{
		"NATS_PASSWORD": "p", "NATS_TOKEN": "t", "KENAR_IDENTIFICATION_KEY": "idkey", "CHABOK_ACCESS_TOKEN": "ct",
		"METRIX_APP_ID": "app", "METRIX_DEV_KEY": "dk", "METRIX_API_KEY": "ak", "KENAR_API_KEY": "kk",
	}
	cfg, err := config.Parse(raw, env(vars))
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if len(cfg.Sinks) != 4 || cfg.Streams.Replicas != 3 || cfg.Sinks[3].Concurrency != 4 || cfg.Sinks[0].Concurrency != 8 {
		t.Errorf("example parsed to %+v", cfg)
	}
	if _, err := sinks.Build(cfg.Sinks); err != nil {
		t.Errorf("example sinks: %v", err)
	}
	demoVars := map[string]string{}
	for _, k := range []string{"EMULATOR_CHABOK", "EMULATOR_METRIX_S2S", "EMULATOR_METRIX_GATEWAY", "EMULATOR_KENAR",
		"DEMO_CHABOK_TOKEN", "DEMO_METRIX_DEV_KEY", "DEMO_METRIX_API_KEY", "DEMO_KENAR_API_KEY", "DEMO_KENAR_TOKEN"} {
		demoVars[k] = "http://127.0.0.1:1"
	}
	demo, err := config.Parse(configs.Demo(), env(demoVars))
	if err != nil {
		t.Fatalf("demo config: %v", err)
	}
	if got := demo.Sinks[0].Retry.InitialInterval; got != 200*time.Millisecond {
		t.Errorf("sink_defaults not applied: initial_interval %s", got)
	}
	if got := demo.Sinks[0].Retry.Multiplier; got != 2 {
		t.Errorf("built-in default not applied under sink_defaults: multiplier %v", got)
	}
}

func TestBadConfigNamesKeyAndFix(t *testing.T) {
	base := `
sinks:
  - name: chabok
    vendor: chabok
    settings:
      app_id: a
      access_token: t
routes:
  - sinks: [chabok]
`
	tests := []struct {
		name, yaml string
		env        map[string]string
		want       []string
	}{
		{"not YAML", "sinks: [", nil, []string{"not valid YAML"}},
		{"unknown key", "dispatcher:\n  concurency: 3\n", nil, []string{"concurency", "not found"}},
		{"missing env var", strings.Replace(base, "access_token: t", "access_token: ${CHABOK_TOKEN}", 1), nil,
			[]string{"sinks[0].settings.access_token", "CHABOK_TOKEN is not set"}},
		{"missing secret file", strings.Replace(base, "access_token: t", "access_token: ${file:/nonexistent/x}", 1), nil,
			[]string{"sinks[0].settings.access_token", "cannot read secret file"}},
		{"bad sink name", strings.Replace(base, "name: chabok", "name: Chabok Main", 1), nil, []string{"sinks[0].name"}},
		{"route to unknown sink", base + "  - sinks: [nope]\n", nil, []string{"routes[1].sinks[0]", `"nope" is not a configured sink`}},
		{"unknown type in route", base + "  - sinks: [chabok]\n    types: [chapar.click]\n", nil, []string{"routes[1].types[0]"}},
		{"bad duration", "dispatcher:\n  ack_wait: soon\n", nil, []string{"ack_wait"}},
		{"negative timeout", strings.Replace(base, "vendor: chabok", "vendor: chabok\n    timeout: -1s", 1), nil,
			[]string{"sinks[0].timeout", "must be positive"}},
		{"retry multiplier", strings.Replace(base, "vendor: chabok", "vendor: chabok\n    retry: {multiplier: 0.5}", 1), nil,
			[]string{"sinks[0].retry.multiplier"}},
		{"replicas", "streams:\n  replicas: 2\n", nil, []string{"streams.replicas", "use 1"}},
		{"webhook without key", "webhook:\n  listen: :8080\n", nil, []string{"webhook.identification_key"}},
		{"duplicate sink", strings.Replace(base, "routes:", "  - name: chabok\n    vendor: kenar\nroutes:", 1), nil,
			[]string{"sinks[1].name", "used by another sink"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tt.yaml), env(tt.env))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestSinkSettingsAreValidatedAtStart(t *testing.T) {
	tests := []struct {
		name, settings, vendor string
		want                   []string
	}{
		{"chabok missing token", "{app_id: a}", "chabok", []string{"sinks[0].settings.access_token: is required"}},
		{"metrix typo", "{app_id: a, devkey: k}", "metrix-s2s", []string{"sinks[0].settings", "devkey"}},
		{"metrix time unit", "{app_id: a, dev_key: k, event_time_unit: us}", "metrix-s2s", []string{"event_time_unit"}},
		{"gateway missing both", "{}", "metrix-gateway", []string{"settings.app_id: is required", "settings.api_key: is required"}},
		{"kenar missing token", "{api_key: k}", "kenar", []string{"settings.access_token: is required"}},
		{"unknown vendor", "{}", "mixpanel", []string{"sinks[0].vendor", "mixpanel"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(fmt.Sprintf("sinks:\n  - name: s\n    vendor: %s\n    settings: %s\n", tt.vendor, tt.settings)), env(nil))
			if err != nil {
				t.Fatal(err)
			}
			_, err = sinks.Build(cfg.Sinks)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestSecretsNeverPrint(t *testing.T) {
	cfg, err := config.Parse([]byte("nats:\n  token: ${T}\n"), env(map[string]string{"T": "s3cr3t"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprint(cfg.NATS.Token), fmt.Sprintf("%v %+v", cfg.NATS, cfg.NATS)} {
		if strings.Contains(out, "s3cr3t") {
			t.Errorf("secret printed: %s", out)
		}
	}
	if cfg.NATS.Token.Value() != "s3cr3t" {
		t.Error("secret lost")
	}
}
