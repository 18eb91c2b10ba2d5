package config_test

import (
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/internal/config"
)

// A route may name any CloudEvents type, Chapar's or a producer's own; a
// type no envelope could carry is refused, naming its key.
func TestRoutesTakeAnyEventType(t *testing.T) {
	const sinks = "sinks:\n  - {name: hook, vendor: webhook}\n"
	for _, ok := range []string{"chapar.track", "com.shop.order.shipped", "OrderShipped"} {
		if _, err := config.Parse([]byte(sinks+"routes:\n  - {types: [\""+ok+"\"], sinks: [hook]}\n"), env(nil)); err != nil {
			t.Errorf("%s refused: %v", ok, err)
		}
	}
	for _, tt := range []struct{ eventType, says string }{
		{"chapar.click", "reserved"},
		{"com.shop order", "printable ASCII"},
		{"com..shop", "empty token"},
		{"com.shop.*", "wildcard"},
		{"", "empty"},
	} {
		_, err := config.Parse([]byte(sinks+"routes:\n  - {types: [\"com.ok\", \""+tt.eventType+"\"], sinks: [hook]}\n"), env(nil))
		if err == nil || !strings.Contains(err.Error(), "routes[0].types[1]: ") || !strings.Contains(err.Error(), tt.says) {
			t.Errorf("%q: %v", tt.eventType, err)
		}
	}
}
