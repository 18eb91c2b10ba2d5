package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/internal/emulator"
)

// kenar subscribe registers the subscription with the configured kenar
// sink (the emulated Kenar checks its credentials and body) and, with
// --json, prints what it registered as one JSON object.
func TestKenarSubscribe(t *testing.T) {
	emu := emulator.New(emulator.DemoConfig())
	srv := httptest.NewServer(emu.Vendor(emulator.Kenar))
	t.Cleanup(srv.Close)
	creds := emulator.DemoSettings(emulator.Kenar)
	file := filepath.Join(t.TempDir(), "kenar.yaml")
	yaml := fmt.Sprintf(`sinks:
  - name: divar
    vendor: kenar
    base_url: %s
    settings: { api_key: %q, access_token: %q }
routes:
  - types: [chapar.notify]
    sinks: [divar]
`, emulator.BaseURL(emulator.Kenar, srv.Listener.Addr().String()), creds["api_key"], creds["access_token"])
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"kenar", "subscribe", "--config", file, "--sink", "divar", "--event-type", "POST_UPDATE",
		"--resource-id", "AaBbCcDd", "--metadata", `{"team":"ads"}`}
	for _, tc := range []struct {
		name string
		json bool
	}{{"text", false}, {"json", true}} {
		t.Run(tc.name, func(t *testing.T) {
			a := args
			if tc.json {
				a = append(a[:len(a):len(a)], "--json")
			}
			var out, errOut bytes.Buffer
			if code := mainCode(context.Background(), a, strings.NewReader(""), &out, &errOut); code != 0 {
				t.Fatalf("exit %d\nstdout: %s\nstderr: %s", code, out.String(), errOut.String())
			}
			if !tc.json {
				if want := `subscribed to POST_UPDATE (resource "AaBbCcDd") with sink divar`; !strings.Contains(out.String(), want) {
					t.Errorf("stdout lacks %q:\n%s", want, out.String())
				}
				return
			}
			var got kenarSubscribed
			dec := json.NewDecoder(&out)
			dec.DisallowUnknownFields()
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("--json output is not one object: %v\n%s", err, out.String())
			}
			if got.Sink != "divar" || got.EventType != "POST_UPDATE" || got.ResourceID != "AaBbCcDd" || got.Metadata["team"] != "ads" {
				t.Errorf("--json printed %+v", got)
			}
		})
	}
	// Both runs reached the vendor, and it accepted them.
	if n := emu.Vendor(emulator.Kenar).Count(200); n != 2 {
		t.Errorf("Kenar accepted %d subscriptions, want 2", n)
	}
}
