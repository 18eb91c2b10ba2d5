package config_test

import (
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
)

const batchBase = `
sinks:
  - name: chabok
    vendor: chabok
    concurrency: 4
    settings:
      app_id: a
      access_token: t
BATCH
routes:
  - sinks: [chabok]
`

func parseBatch(t *testing.T, batch string) (*config.Config, error) {
	t.Helper()
	return config.Parse([]byte(strings.Replace(batchBase, "BATCH", batch, 1)), env(nil))
}

func TestBatchIsOptInAndDerivesMaxAckPending(t *testing.T) {
	cfg, err := parseBatch(t, "")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sinks[0].Batch != nil {
		t.Errorf("batch on without the key: %+v", cfg.Sinks[0].Batch)
	}
	cfg, err = parseBatch(t, "    batch: {max_items: 500, max_wait: 20ms}")
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.Sinks[0]
	if s.Batch == nil || s.Batch.MaxItems != 500 || s.Batch.MaxWait != 20*time.Millisecond {
		t.Fatalf("batch parsed to %+v", s.Batch)
	}
	if s.MaxAckPending != 500*5 {
		t.Errorf("max_ack_pending %d, want a batch per request slot and one filling (2500)", s.MaxAckPending)
	}
	// Written, it is kept.
	cfg, err = parseBatch(t, "    max_ack_pending: 800\n    batch: {max_items: 500, max_wait: 20ms}")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Sinks[0].MaxAckPending != 800 {
		t.Errorf("written max_ack_pending became %d", cfg.Sinks[0].MaxAckPending)
	}
}

func TestBadBatchNamesKeyAndFix(t *testing.T) {
	tests := []struct {
		name, batch string
		want        []string
	}{
		{"no items", "    batch: {max_wait: 20ms}", []string{"sinks[0].batch.max_items: is 0", "use 1 to 10000"}},
		{"too many", "    batch: {max_items: 20000, max_wait: 20ms}", []string{"sinks[0].batch.max_items: is 20000"}},
		{"no wait", "    batch: {max_items: 10}", []string{"sinks[0].batch.max_wait: is 0s", "e.g. 50ms"}},
		{"wait near ack_wait", "    batch: {max_items: 10, max_wait: 20s}", []string{"sinks[0].batch.max_wait: is 20s", "dispatcher.ack_wait"}},
		{"unknown key", "    batch: {max_item: 10, max_wait: 20ms}", []string{"max_item", "not found"}},
		{"window too small", "    max_ack_pending: 100\n    batch: {max_items: 500, max_wait: 20ms}",
			[]string{"sinks[0].max_ack_pending: is 100, less than batch.max_items (500)"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseBatch(t, tt.batch)
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
