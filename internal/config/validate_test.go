package config_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/internal/config"
)

// What dispatcher run refused or crashed on after config check said ok: a
// listen address that is no host:port, a log level zap cannot read, a
// webhook path that is no ServeMux path (run panicked on a space or a {),
// a path without its leading slash, a base_url with a fragment. Each is
// refused here, naming its key; a value a ${…} reference brought in is
// shown as the reference, never as itself.
func TestValidateRefusesWhatRunCannotServe(t *testing.T) {
	const secret = "hunter2-Very-Secret"
	vars := map[string]string{"SECRET": secret}
	webhook := func(path string) string {
		return fmt.Sprintf("webhook: {listen: \"127.0.0.1:8080\", identification_key: k, path: %q}\n", path)
	}
	tests := []struct {
		name, yaml string
		want       []string
	}{
		{"admin.listen not a port", "admin: {listen: \"127.0.0.1:notaport\"}\n",
			[]string{"admin.listen: ", `"127.0.0.1:notaport"`, "host:port"}},
		{"admin.listen port out of range", "admin: {listen: \"127.0.0.1:70000\"}\n", []string{"admin.listen: ", "0 to 65535"}},
		{"admin.listen no port", "admin: {listen: \"127.0.0.1\"}\n", []string{"admin.listen: ", "host:port"}},
		{"admin.listen a secret", "admin: {listen: \"${SECRET}\"}\n", []string{"admin.listen: ", "${SECRET}"}},
		{"admin.probe_listen not a port", "admin: {probe_listen: \"127.0.0.1:probes\"}\n", []string{"admin.probe_listen: ", "host:port"}},
		{"admin.probe_listen a secret", "admin: {probe_listen: \"${SECRET}\"}\n", []string{"admin.probe_listen: ", "${SECRET}"}},
		{"webhook.listen not a port", "webhook: {listen: \"0.0.0.0:http-alt\", identification_key: k}\n", []string{"kenar_webhook.listen: "}},
		{"embedded listen not a port", "nats: {embedded: {listen: \"127.0.0.1:x\"}}\n", []string{"nats.embedded.listen: ", "host:port"}},
		{"log level unknown", "dispatcher: {log_level: loud}\n", []string{"dispatcher.log_level: ", `"loud"`, "debug, info, warn or error"}},
		{"log level a secret", "dispatcher: {log_level: \"${SECRET}\"}\n", []string{"dispatcher.log_level: ", "${SECRET}"}},
		{"webhook.path with a space", webhook("/web hook"), []string{"kenar_webhook.path: ", "/webhooks/kenar"}},
		{"webhook.path with a brace", webhook("/hooks/{kenar}"), []string{"kenar_webhook.path: ", "/webhooks/kenar"}},
		{"webhook.path with a method", webhook("POST /hooks"), []string{"kenar_webhook.path: "}},
		{"webhook.path without a slash", webhook("webhooks/kenar"), []string{"kenar_webhook.path: ", "start with /"}},
		{"webhook.path empty", webhook(""), []string{"kenar_webhook.path: ", "start with /"}},
		{"webhook.path dot segment", webhook("/hooks/../kenar"), []string{"kenar_webhook.path: "}},
		{"webhook.path a secret", webhook("/${SECRET} x"), []string{"kenar_webhook.path: ", "${SECRET}"}},
		{"nats.connect_timeout negative", "nats: {connect_timeout: -1s}\n", []string{"nats.connect_timeout: ", "-1s", "positive"}},
		{"nats.connect_timeout zero: a dial without a deadline", "nats: {connect_timeout: 0s}\n", []string{"nats.connect_timeout: ", "positive"}},
		{"streams.filter_by_route not a bool", "streams: {filter_by_route: maybe}\n", []string{"streams.filter_by_route: ", "bool"}},
		{"base_url with a fragment", "sinks:\n  - {name: s, vendor: chabok, base_url: \"https://example.com/api#part\"}\n",
			[]string{"sinks[0].base_url: ", "fragment"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tt.yaml), env(vars))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the secret reached the error: %v", err)
			}
		})
	}
	for _, ok := range []string{
		"admin: {listen: \":9090\"}",
		"admin: {listen: \"localhost:9090\"}",
		"admin: {listen: \"[::1]:0\"}",
		"admin: {listen: \"\"}",
		"dispatcher: {log_level: warn}",
		"streams: {filter_by_route: false}",
		"dispatcher: {log_level: DEBUG}",
		strings.TrimSpace(webhook("/webhooks/kenar")),
		strings.TrimSpace(webhook("/hooks/kenar-v2.1_x~/")),
		strings.TrimSpace(webhook("/")),
	} {
		if _, err := config.Parse([]byte(ok+"\n"), env(vars)); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
}

// A base_url whose query string carries something that reads as a
// credential is accepted with a warning that names the parameter, not its
// value: the URL is logged and shown in errors.
func TestBaseURLQueryCredentialWarns(t *testing.T) {
	tests := []struct {
		url  string
		warn string // "": no warning
	}{
		{"https://example.com/api?api_key=Zk9s3cr3tValue", "api_key"},
		{"https://example.com/api?region=eu&Token=Zk9s3cr3tValue", "Token"},
		{"https://example.com/api?sig=Zk9s3cr3tValue", "sig"},
		{"https://example.com/api?region=eu&page=2", ""},
		{"https://example.com/api", ""},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			cfg, err := config.Parse([]byte(fmt.Sprintf("sinks:\n  - {name: s, vendor: chabok, base_url: %q}\n", tt.url)), env(nil))
			if err != nil {
				t.Fatal(err)
			}
			warnings := strings.Join(cfg.Warnings(), "\n")
			if tt.warn == "" {
				if warnings != "" {
					t.Errorf("warned: %s", warnings)
				}
				return
			}
			if !strings.Contains(warnings, "sinks[0].base_url: ") || !strings.Contains(warnings, tt.warn) {
				t.Errorf("warnings %q do not name sinks[0].base_url and %s", warnings, tt.warn)
			}
			if strings.Contains(warnings, "Zk9s3cr3tValue") {
				t.Errorf("the value reached the warning: %s", warnings)
			}
		})
	}
}
