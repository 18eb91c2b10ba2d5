package config

import (
	"strings"
	"testing"
)

// The Kenar receiver's key is kenar_webhook; its old name, webhook, is read
// for one release with a warning, and a file with both is refused.
func TestKenarWebhookKeyAndItsOldName(t *testing.T) {
	env := func(string) (string, bool) { return "", false }
	for _, tt := range []struct {
		name, file  string
		listen      string // the receiver's listen address read
		warning     string // a warning containing this; "" for none
		errContains string
	}{
		{name: "new name", file: "kenar_webhook: {listen: \":8080\", identification_key: k}\n", listen: ":8080"},
		{name: "old name", file: "webhook: {listen: \":8081\", identification_key: k}\n", listen: ":8081",
			warning: "webhook (line 1) is now named kenar_webhook"},
		{name: "both", file: "kenar_webhook: {listen: \":8080\", identification_key: k}\nwebhook: {listen: \":8081\"}\n",
			errContains: "webhook: line 2: the old name of kenar_webhook, which this file also sets; keep only kenar_webhook"},
		{name: "old name, error under the new one", file: "webhook: {listen: \":8081\"}\n",
			errContains: "kenar_webhook.identification_key: is required when kenar_webhook.listen is set"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse([]byte(tt.file), env)
			if tt.errContains != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errContains) {
					t.Fatalf("err %v, want one containing %q", err, tt.errContains)
				}
				if strings.Count(err.Error(), "webhook") > 3 {
					t.Errorf("the key is reported more than once: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Webhook.Listen != tt.listen || cfg.Webhook.IdentificationKey.Value() != "k" {
				t.Errorf("read %+v", cfg.Webhook)
			}
			// The file has no sinks, which is warned about too: only the
			// key's warnings count here.
			var about []string
			for _, w := range cfg.Warnings() {
				if strings.Contains(w, "webhook") {
					about = append(about, w)
				}
			}
			switch {
			case tt.warning == "" && len(about) > 0:
				t.Errorf("warnings %q, want none", about)
			case tt.warning != "" && (len(about) != 1 || !strings.Contains(about[0], tt.warning)):
				t.Errorf("warnings %q, want one containing %q", about, tt.warning)
			}
		})
	}
}
