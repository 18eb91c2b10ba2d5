package app_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/internal/app"
)

// A route that names a type and sends it to a vendor sink that has no call
// for it is refused by config check (and so by run, the same validator),
// naming the route's key; the webhook takes any type, and a catch-all
// route (no types) is not refused: what it sends a vendor that cannot take
// it is dead-lettered unsupported_event.
func TestConfigRefusesAnExplicitRouteOfAnUnsupportedType(t *testing.T) {
	const sinks = `sinks:
  - {name: hook, vendor: webhook, settings: {url: "http://127.0.0.1:1/x"}}
  - {name: chabok, vendor: chabok, settings: {app_id: a, access_token: t}}
  - {name: kenar, vendor: kenar, settings: {api_key: k, access_token: t}}
`
	tests := []struct {
		name, routes string
		want         []string // every problem, key first; none: accepted
	}{
		{"custom type to the webhook", "  - {types: [com.shop.order.shipped], sinks: [hook]}\n", nil},
		{"catch-all to chabok", "  - {sinks: [chabok, hook]}\n", nil},
		{"ops events to the webhook", "  - {types: [chapar.ops.dead_lettered, chapar.ops.breaker_opened], sinks: [hook]}\n", nil},
		{"ops events to chabok", "  - {types: [chapar.ops.dead_lettered], sinks: [hook, chabok]}\n",
			[]string{`routes[0].types[0]: "chapar.ops.dead_lettered" is sent to sink chabok (routes[0].sinks[1])`}},
		{"Chapar types to the vendors that map them", "  - {types: [chapar.track], sinks: [chabok]}\n  - {types: [chapar.notify], sinks: [kenar]}\n", nil},
		{"custom type to chabok", "  - {types: [chapar.track, com.shop.order.shipped], sinks: [hook, chabok]}\n",
			[]string{`routes[0].types[1]: "com.shop.order.shipped" is sent to sink chabok (routes[0].sinks[1])`}},
		{"a Chapar type chabok has no call for", "  - {types: [chapar.notify], sinks: [kenar, chabok]}\n",
			[]string{`routes[0].types[0]: "chapar.notify" is sent to sink chabok (routes[0].sinks[1])`}},
		{"one type to two vendors that cannot take it", "  - {types: [com.shop.x], sinks: [chabok, kenar]}\n",
			[]string{`routes[0].types[0]: "com.shop.x" is sent to sink chabok (routes[0].sinks[0])`, `sink kenar (routes[0].sinks[1])`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "chapar.yaml")
			if err := os.WriteFile(file, []byte(sinks+"routes:\n"+tt.routes), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := app.CheckConfig(app.ConfigSource{File: file, LookupEnv: func(string) (string, bool) { return "", false }})
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
			if !strings.Contains(err.Error(), "takes only") {
				t.Errorf("error does not say what the sink takes:\n%v", err)
			}
		})
	}
}
