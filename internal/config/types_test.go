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

// data_schemas are compiled at config check, each bad one named by its key.
func TestDataSchemasAreCheckedWithTheConfig(t *testing.T) {
	ok := "data_schemas:\n  com.shop.order.shipped: {type: object, required: [order]}\n"
	if _, err := config.Parse([]byte(ok), env(nil)); err != nil {
		t.Errorf("refused: %v", err)
	}
	bad := "data_schemas:\n  com.shop.order.shipped: {type: 7}\n  chapar.click: {type: object}\n"
	_, err := config.Parse([]byte(bad), env(nil))
	for _, want := range []string{"data_schemas.com.shop.order.shipped: ", `data_schemas.chapar.click: "chapar.click" is not an event type`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not say %q", err, want)
		}
	}
}
