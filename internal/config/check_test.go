package config_test

import (
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/internal/config"
)

// Check goes on after the first problem: every unresolved reference, type
// error and invalid value is reported, each key once, and the config read
// so far is returned for the vendors' checks.
func TestCheckReportsEveryErrorOnce(t *testing.T) {
	raw := `
kenar_webhook: {listen: ":8080", identification_key: "${UNSET_A}"}
dispatcher:
  ack_wait: soon
  log_format: xml
streams: {replicas: 2}
sinks:
  - name: s
    vendor: chabok
    concurrency: "${UNSET_B}"
    settings: {app_id: a, access_token: "${UNSET_C}"}
routes:
  - sinks: [nope]
`
	cfg, err := config.Check([]byte(raw), env(nil))
	if cfg == nil || err == nil {
		t.Fatalf("cfg %v, err %v", cfg, err)
	}
	lines := strings.Split(err.Error(), "\n")
	for _, key := range []string{
		"kenar_webhook.identification_key: environment variable UNSET_A",
		"sinks[0].concurrency: environment variable UNSET_B",
		"sinks[0].settings.access_token: environment variable UNSET_C",
		"dispatcher.ack_wait: line 4:",
		"dispatcher.log_format: is \"xml\"",
		"streams.replicas: is 2",
		"routes[0].sinks[0]: \"nope\"",
	} {
		n := 0
		for _, l := range lines {
			if strings.HasPrefix(l, key) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%q reported %d times:\n%s", key, n, err)
		}
	}
	if len(lines) != 7 {
		t.Errorf("%d errors, want 7 (each key once):\n%s", len(lines), err)
	}
	if len(cfg.Sinks) != 1 || cfg.Sinks[0].Vendor != "chabok" {
		t.Errorf("the config read so far: %+v", cfg.Sinks)
	}
	if _, err := config.Parse([]byte(raw), env(nil)); err == nil {
		t.Error("Parse accepts what Check refuses")
	}
}

// In a flow mapping several keys share a line: the error names the one
// whose name or value yaml quotes, not the last on the line.
func TestCheckNamesTheKeyInAFlowMapping(t *testing.T) {
	_, err := config.Check([]byte("dispatcher: {ack_wait: soon, log_format: json, shutdown_grace: 10s}\n"+
		"streams: {replicas: 1, storage: file, max_age: 30, duplicate_window: 10m}\n"+
		"admin: {listen: ':0', lisen: x}\n"), env(nil))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, want := range []string{"dispatcher.ack_wait: line 1: cannot unmarshal !!str `soon`", "streams.max_age: line 2:", "admin.lisen: line 3: field lisen not found"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("errors do not say %q:\n%v", want, err)
		}
	}
}

// yaml quotes the first 7 characters of a long value in a type error: a
// secret there is shown as its reference too.
func TestTypeErrorsDoNotEchoAPrefixOfASecret(t *testing.T) {
	_, err := config.Check([]byte("sink_defaults: {concurrency: '${SECRET}'}\n"), env(map[string]string{"SECRET": "hunter2-long-secret"}))
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "sink_defaults.concurrency") {
		t.Errorf("%v", err)
	}
}
