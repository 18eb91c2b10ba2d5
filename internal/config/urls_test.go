package config_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/internal/config"
)

// A base_url that cannot be sent to fails the start, naming its key,
// instead of dead-lettering every event with status 0.
func TestBaseURLIsValidatedAtStart(t *testing.T) {
	for raw, want := range map[string]string{
		"ht!tp://exa mple.com:99999":  "contains a space",
		"ht!tp://example.com":         "is not a URL",
		"ftp://example.com":           `has scheme "ftp"; use http or https`,
		"not a url":                   "contains a space",
		"example.com/api":             `has scheme ""`,
		"https://example.com:99999":   "has port 99999; use 1 to 65535",
		"https://example.com:0/api":   "has port 0",
		"https:///api":                "has no host",
		"https://user:pw@example.com": "carries credentials",
	} {
		_, err := config.Parse([]byte(fmt.Sprintf("sinks:\n  - {name: s, vendor: chabok, base_url: %q}\n", raw)), env(nil))
		if err == nil || !strings.Contains(err.Error(), "sinks[0].base_url: ") || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", raw, err, want)
		}
		if strings.Contains(raw, "pw@") && strings.Contains(err.Error(), "pw") {
			t.Errorf("the password reached the error: %v", err)
		}
	}
	for _, ok := range []string{"", "https://example.com", "http://127.0.0.1:9101/api", "https://{app_id}.push.adpdigital.com/api", "https://[::1]:8443"} {
		if _, err := config.Parse([]byte(fmt.Sprintf("sinks:\n  - {name: s, vendor: chabok, base_url: %q}\n", ok)), env(nil)); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
}
