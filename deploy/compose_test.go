package deploy

import (
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// composeService is what this test reads of a docker compose service.
type composeService struct {
	Profiles []string `yaml:"profiles"`
	Volumes  []string `yaml:"volumes"`
	Ports    []string `yaml:"ports"`
}

// hostPath maps a path inside a service's container back to the
// repository file a bind mount puts there, or "" if none does.
func (s composeService) hostPath(inContainer string) string {
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 || !strings.HasPrefix(parts[0], "./") {
			continue
		}
		src, dst := parts[0], parts[1]
		if rest, ok := strings.CutPrefix(inContainer, dst); ok && (rest == "" || strings.HasPrefix(rest, "/")) {
			return filepath.Join("..", filepath.FromSlash(src+rest))
		}
	}
	return ""
}

// No Docker engine runs in CI: this checks, instead, that the
// observability profile is wired to the files in deploy/ — every bind
// mount exists, Prometheus loads the alert rules and scrapes every
// dispatcher, Grafana provisions the dashboard from Prometheus.
func TestComposeObservabilityProfile(t *testing.T) {
	var compose struct {
		Services map[string]composeService `yaml:"services"`
	}
	readStrict(t, "../docker-compose.yml", func(b []byte) error { return yaml.Unmarshal(b, &compose) })
	prom, graf := compose.Services["prometheus"], compose.Services["grafana"]
	for name, s := range map[string]composeService{"prometheus": prom, "grafana": graf} {
		if !slices.Contains(s.Profiles, "observability") {
			t.Errorf("service %s is not in the observability profile (profiles %v)", name, s.Profiles)
		}
		for _, v := range s.Volumes {
			src := strings.Split(v, ":")[0]
			if _, err := os.Stat(filepath.Join("..", src)); err != nil {
				t.Errorf("service %s mounts %s: %v", name, src, err)
			}
		}
	}

	// Prometheus: its config, its rules, its targets.
	var promCfg struct {
		RuleFiles     []string `yaml:"rule_files"`
		ScrapeConfigs []struct {
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	cfgFile := prom.hostPath("/etc/prometheus/prometheus.yml")
	if cfgFile == "" {
		t.Fatal("prometheus: nothing mounted at /etc/prometheus/prometheus.yml")
	}
	readStrict(t, cfgFile, func(b []byte) error { return yaml.Unmarshal(b, &promCfg) })
	var rules []string
	for _, glob := range promCfg.RuleFiles {
		dir, pattern := path.Split(glob)
		for _, v := range prom.Volumes {
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && path.Dir(parts[1])+"/" == dir {
				if ok, _ := path.Match(pattern, path.Base(parts[1])); ok {
					rules = append(rules, prom.hostPath(parts[1]))
				}
			}
		}
	}
	if !slices.Contains(rules, filepath.Join("..", "deploy", "prometheus", "chapar.rules.yaml")) {
		t.Errorf("prometheus loads rules %q, not deploy/prometheus/chapar.rules.yaml", rules)
	}
	var targets []string
	for _, sc := range promCfg.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			targets = append(targets, st.Targets...)
		}
	}
	for name := range compose.Services {
		if strings.HasPrefix(name, "dispatcher-") && !slices.Contains(targets, name+":9090") {
			t.Errorf("prometheus does not scrape %s:9090 (targets %v)", name, targets)
		}
	}
	for _, target := range targets {
		if _, ok := compose.Services[strings.Split(target, ":")[0]]; !ok {
			t.Errorf("prometheus scrapes %s, which is not a compose service", target)
		}
	}

	// Grafana: the datasource is the compose Prometheus, the dashboards
	// provider's folder holds the dashboard.
	var ds struct {
		Datasources []struct {
			Type string `yaml:"type"`
			URL  string `yaml:"url"`
		} `yaml:"datasources"`
	}
	readStrict(t, graf.hostPath("/etc/grafana/provisioning/datasources/prometheus.yaml"), func(b []byte) error { return yaml.Unmarshal(b, &ds) })
	if len(ds.Datasources) != 1 || ds.Datasources[0].Type != "prometheus" || ds.Datasources[0].URL != "http://prometheus:9090" {
		t.Errorf("grafana's datasources are %+v, want the compose prometheus", ds.Datasources)
	}
	var providers struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readStrict(t, graf.hostPath("/etc/grafana/provisioning/dashboards/chapar.yaml"), func(b []byte) error { return yaml.Unmarshal(b, &providers) })
	if len(providers.Providers) != 1 {
		t.Fatalf("grafana has %d dashboard providers, want 1", len(providers.Providers))
	}
	dashboard := graf.hostPath(providers.Providers[0].Options.Path + "/chapar.json")
	if dashboard != filepath.Join("..", "deploy", "grafana", "chapar.json") {
		t.Errorf("grafana's dashboards folder %s does not hold deploy/grafana/chapar.json (mapped to %q)", providers.Providers[0].Options.Path, dashboard)
	}
}
