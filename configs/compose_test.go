package configs_test

import (
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/config"
)

type service struct {
	Image      string   `yaml:"image"`
	Build      any      `yaml:"build"`
	Command    []string `yaml:"command"`
	Entrypoint []string `yaml:"entrypoint"`
	DependsOn  map[string]struct {
		Condition string `yaml:"condition"`
	} `yaml:"depends_on"`
	Environment map[string]string `yaml:"environment"`
	Profiles    []string          `yaml:"profiles"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

// The CI machine has no Docker engine: this checks what compose would run
// is wired together — the cluster's routes, the replicas' config, the
// emulator's ports — and that the config they run loads.
func TestComposeWiring(t *testing.T) {
	raw, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]service `yaml:"services"`
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	svc := compose.Services
	nats := []string{"nats-1", "nats-2", "nats-3"}
	gomod, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nats {
		s, ok := svc[n]
		if !ok {
			t.Fatalf("no service %s", n)
		}
		// The cluster runs the nats-server version Chapar embeds and tests.
		tag := strings.TrimSuffix(strings.TrimPrefix(s.Image, "nats:"), "-alpine")
		if !strings.Contains(string(gomod), "github.com/nats-io/nats-server/v2 v"+tag+"\n") {
			t.Errorf("%s runs %s, not go.mod's nats-server", n, s.Image)
		}
		if hc := strings.Join(s.Healthcheck.Test, " "); !strings.Contains(hc, "healthz") {
			t.Errorf("%s: no healthcheck on its monitoring port (%q)", n, hc)
		}
		cmd := strings.Join(s.Command, " ")
		for _, want := range []string{"--js", "--cluster_name chapar", "--name " + n, "--sd /data"} {
			if !strings.Contains(cmd, want) {
				t.Errorf("%s: command lacks %q", n, want)
			}
		}
		for _, peer := range nats {
			if peer != n && !strings.Contains(cmd, "nats://"+peer+":6222") {
				t.Errorf("%s does not route to %s", n, peer)
			}
		}
	}
	emu := svc["emulator"]
	emuPorts := map[string]bool{}
	for i := 0; i+1 < len(emu.Command); i++ {
		if strings.HasPrefix(emu.Command[i], "--") {
			if _, port, ok := strings.Cut(emu.Command[i+1], ":"); ok {
				emuPorts[port] = true
			}
		}
	}
	var replicas int
	for name, s := range svc {
		if !strings.HasPrefix(name, "dispatcher-") {
			continue
		}
		replicas++
		for _, dep := range append(nats, "emulator") {
			cond, ok := s.DependsOn[dep]
			if !ok {
				t.Errorf("%s does not depend on %s", name, dep)
			}
			if slices.Contains(nats, dep) && cond.Condition != "service_healthy" {
				t.Errorf("%s starts before %s is healthy (condition %q)", name, dep, cond.Condition)
			}
		}
		// The probe listener (compose.yaml's admin.probe_listen), which slow
		// clients of the admin port cannot delay.
		if hc := strings.Join(s.Healthcheck.Test, " "); !strings.Contains(hc, "dispatcher health --addr 127.0.0.1:9091") {
			t.Errorf("%s: healthcheck %q does not ask the probe listener", name, hc)
		}
		if len(s.Command) != 3 || s.Command[0] != "run" || s.Command[1] != "--config" || !strings.HasPrefix(s.Command[2], "/etc/chapar/") {
			t.Fatalf("%s command %v", name, s.Command)
		}
		// The Dockerfile copies configs/ to /etc/chapar/.
		file := strings.TrimPrefix(s.Command[2], "/etc/chapar/")
		cfgRaw, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("%s runs %s, which configs/ lacks: %v", name, s.Command[2], err)
		}
		env := map[string]string{"HOSTNAME": name}
		for k, v := range s.Environment {
			env[k] = v
		}
		cfg, err := config.Parse(cfgRaw, func(k string) (string, bool) { v, ok := env[k]; return v, ok })
		if err != nil {
			t.Fatalf("%s: %s with its environment: %v", name, file, err)
		}
		for _, n := range nats {
			if !strings.Contains(cfg.NATS.URL, "nats://"+n+":4222") {
				t.Errorf("%s: nats.url %q lacks %s", name, cfg.NATS.URL, n)
			}
		}
		if cfg.Streams.Replicas != 3 {
			t.Errorf("streams.replicas %d on a 3-node cluster", cfg.Streams.Replicas)
		}
		for _, sink := range cfg.Sinks {
			u, err := url.Parse(sink.BaseURL)
			if err != nil || u.Hostname() != "emulator" || !emuPorts[u.Port()] {
				t.Errorf("sink %s base_url %q is not an emulator port %v", sink.Name, sink.BaseURL, emuPorts)
			}
		}
	}
	if replicas != 3 {
		t.Errorf("%d dispatcher replicas, want 3", replicas)
	}
	if p, ok := svc["publisher"]; !ok || !strings.Contains(strings.Join(p.Entrypoint, " "), "publisher") {
		t.Error("no publisher service to try it with")
	}
	docker, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"AS build", "CGO_ENABLED=0", "COPY configs/ /etc/chapar/", "FROM gcr.io/distroless/static"} {
		if !strings.Contains(string(docker), want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
}
