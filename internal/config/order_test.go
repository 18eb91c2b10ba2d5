package config_test

import (
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/internal/config"
)

func parseOrder(t *testing.T, order string) (*config.Config, error) {
	t.Helper()
	return config.Parse([]byte(strings.Replace(batchBase, "BATCH", order, 1)), env(nil))
}

func TestOrderIsOptInAndReadsBothShapes(t *testing.T) {
	tests := []struct{ name, yaml, key string }{
		{"absent", "", ""},
		{"shorthand", "    order: by_user", config.OrderByUser},
		{"mapping", "    order: {key: by_user}", config.OrderByUser},
		{"template", `    order: {key: "{{.Extensions.tenant}}/{{.Subject}}"}`, "{{.Extensions.tenant}}/{{.Subject}}"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := parseOrder(t, tt.yaml)
			if err != nil {
				t.Fatal(err)
			}
			o := cfg.Sinks[0].Order
			switch {
			case tt.key == "" && o != nil:
				t.Fatalf("order on without the key: %+v", o)
			case tt.key != "" && (o == nil || o.Key != tt.key):
				t.Fatalf("order parsed to %+v, want key %q", o, tt.key)
			}
		})
	}
}

func TestBadOrderNamesKeyAndFix(t *testing.T) {
	tests := []struct {
		name, order string
		want        []string
	}{
		{"empty key", `    order: {key: ""}`, []string{"sinks[0].order.key: is empty", "by_user"}},
		{"constant", "    order: by_usr", []string{`sinks[0].order.key: is "by_usr", neither by_user nor a template`, "one event at a time"}},
		{"bad template", `    order: {key: "{{.Subject"}`, []string{"sinks[0].order.key: is not a valid template"}},
		{"misspelt field", `    order: {key: "{{.Subjct}}"}`, []string{"sinks[0].order.key:", "Subjct", ".Extensions.<name>"}},
		{"unknown key", "    order: {by: user}", []string{"order.by: unknown key", "only key"}},
		{"a list", "    order: [by_user]", []string{"order: use by_user or {key: <template>}"}},
		{"with batch", "    order: by_user\n    batch: {max_items: 10, max_wait: 20ms}", []string{"sinks[0].order: cannot be combined with batch"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseOrder(t, tt.order)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}
