package emulator_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/configs"
	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
)

// configs/demo.yaml reads its credentials from DemoEnv (each vendor's file)
// and its addresses from EMULATOR_<VENDOR>: no other variable.
func TestDemoConfigReadsTheEmulatorsVariables(t *testing.T) {
	env := emulator.DemoEnv()
	if env["DEMO_CHABOK_ACCESS_TOKEN"] != "demo-chabok-token" || env["DEMO_KENAR_API_KEY"] != "demo-kenar-key" {
		t.Errorf("DemoEnv: %v", env)
	}
	for _, h := range emulator.Handlers() {
		env["EMULATOR_"+strings.ToUpper(strings.ReplaceAll(h.Name, "-", "_"))] = "http://127.0.0.1:1"
	}
	for _, m := range regexp.MustCompile(`\$\{([A-Z0-9_]+)\}`).FindAllStringSubmatch(string(configs.Demo()), -1) {
		if _, ok := env[m[1]]; !ok {
			t.Errorf("configs/demo.yaml reads ${%s}, which the emulator does not set", m[1])
		}
	}
	cfg, err := config.Parse(configs.Demo(), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	var vendors []string
	for _, s := range cfg.Sinks {
		vendors = append(vendors, s.Vendor)
	}
	for _, h := range emulator.Handlers() {
		if !slices.Contains(vendors, h.Name) {
			t.Errorf("configs/demo.yaml has no sink of the emulated vendor %s", h.Name)
		}
	}
}

// A test can change what one vendor accepts; DemoConfig hands out copies.
func TestDemoConfigIsACopy(t *testing.T) {
	cfg := emulator.DemoConfig()
	cfg[emulator.Chabok]["access_token"] = "other"
	if emulator.DemoSettings(emulator.Chabok)["access_token"] != "demo-chabok-token" {
		t.Error("changing a DemoConfig changed the vendor's Demo settings")
	}
}
