package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/app"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// A default helm install starts: the chart rendered with its default
// values gives a config that passes the one validator with only the
// environment the pod gets (the Deployment's env and the Secret the chart
// renders, nothing else), and dispatcher run, started as the pod starts it
// against a JetStream server, becomes ready. (The defaults used to need
// CRM_TOKEN, which they did not supply.) The one value set is admin.port,
// to a free port, so the test can run beside others.
func TestHelmDefaultsStart(t *testing.T) {
	helm := findHelm(t)
	e := testenv.New(t)
	admin := testenv.FreeAddr(t)
	_, port, _ := net.SplitHostPort(admin)
	out, err := exec.Command(helm, "template", "chapar", "../../deploy/helm/chapar", "--set", "admin.port="+port).Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("helm template: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("helm template: %v", err)
	}
	pod := renderedPod(t, out)

	dir := t.TempDir()
	file := filepath.Join(dir, "chapar.yaml")
	if err := os.WriteFile(file, []byte(pod.config), 0o600); err != nil {
		t.Fatal(err)
	}
	lookup := func(k string) (string, bool) { v, ok := pod.env[k]; return v, ok }
	if _, err := app.CheckConfig(app.ConfigSource{File: file, LookupEnv: lookup}); err != nil {
		t.Fatalf("the default values' config does not check with the pod's environment %v:\n%v", pod.env, err)
	}

	for k, v := range pod.env {
		t.Setenv(k, v)
	}
	// The container's arguments, with its config path here, and the
	// server the chart's nats.url would name.
	args := append(pod.args, "--server", e.Server.ClientURL())
	for i, a := range args {
		if a == "/etc/chapar/chapar.yaml" {
			args[i] = file
		}
	}
	if args[0] != "run" || !strings.Contains(strings.Join(args, " "), file) {
		t.Fatalf("the container runs %v, not run --config on the chart's config", pod.args)
	}
	logs := runUntilReady(t, args, admin)
	if !strings.Contains(logs, "sinks: none configured") {
		t.Errorf("the log does not say that no sink is configured:\n%s", logs)
	}
}

// A config with no sinks starts, serves /readyz and runs until it is
// stopped, saying in its log that no sink is configured. (run refused it,
// config check accepted it; then dispatch.Run returned at once.)
func TestRunWithNoSinksServesUntilStopped(t *testing.T) {
	e := testenv.New(t)
	admin := testenv.FreeAddr(t)
	file := filepath.Join(t.TempDir(), "chapar.yaml")
	if err := os.WriteFile(file, []byte("admin: {listen: \""+admin+"\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logs := runUntilReady(t, []string{"run", "--config", file, "--server", e.Server.ClientURL()}, admin)
	if !strings.Contains(logs, `"level":"warn"`) || !strings.Contains(logs, "sinks: none configured") {
		t.Errorf("the log does not warn that no sink is configured:\n%s", logs)
	}
}

// runUntilReady runs a command line (dispatcher run) until its admin
// listener's /readyz answers 200, checks it is still running, stops it as
// SIGTERM would and returns its log; it fails the test if run stops on its
// own or with an error.
func runUntilReady(t *testing.T, args []string, admin string) string {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	var logs syncBuffer
	done := make(chan error, 1)
	go func() { done <- runCommand(ctx, args, io.Discard, &logs) }()
	testenv.Eventually(t, 15*time.Second, "the dispatcher ready (/readyz 200)", func() bool {
		select {
		case err := <-done:
			t.Fatalf("run stopped on its own: %v\n%s", err, logs.String())
		default:
		}
		resp, err := http.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	select {
	case err := <-done:
		t.Fatalf("run stopped on its own once ready: %v\n%s", err, logs.String())
	default:
	}
	stop()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, logs.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
	return logs.String()
}

// findHelm is $CHAPAR_HELM (.ci/run sets it to the helm it builds), helm
// on the PATH, or the one .ci/run left in GOPATH/bin/chapar-ci; the test
// skips, saying so, without one.
func findHelm(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("CHAPAR_HELM"); h != "" {
		return h // set on purpose: a wrong path fails the test
	}
	if h, err := exec.LookPath("helm"); err == nil {
		return h
	}
	if gopath, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
		found, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(gopath)), "bin", "chapar-ci", "helm-*", "helm"))
		if len(found) > 0 {
			return found[len(found)-1]
		}
	}
	t.Skip("helm not found: set CHAPAR_HELM, put helm on the PATH, or run .ci/run, which builds it")
	return ""
}

// pod is what the rendered chart gives the dispatcher's container.
type pod struct {
	config string            // the ConfigMap's chapar.yaml
	env    map[string]string // env and envFrom, as Kubernetes would set them
	args   []string
}

// renderedPod reads the ConfigMap, the Deployment and the Secret (if any)
// of a rendered chart. A variable from a field reference (POD_NAME) gets a
// pod's name; envFrom must name the Secret the chart rendered, whose keys
// become variables.
func renderedPod(t *testing.T, rendered []byte) pod {
	t.Helper()
	type envVar struct {
		Name      string
		Value     *string
		ValueFrom *struct {
			FieldRef *struct {
				FieldPath string `yaml:"fieldPath"`
			} `yaml:"fieldRef"`
		} `yaml:"valueFrom"`
	}
	type doc struct {
		Kind     string
		Metadata struct{ Name string }
		Data     map[string]string
		// The Secret's.
		StringData map[string]string `yaml:"stringData"`
		Spec       struct {
			Template struct {
				Spec struct {
					Containers []struct {
						Args    []string
						Env     []envVar
						EnvFrom []struct {
							SecretRef *struct{ Name string } `yaml:"secretRef"`
						} `yaml:"envFrom"`
					}
				}
			}
		}
	}
	docs := map[string]doc{}
	dec := yaml.NewDecoder(bytes.NewReader(rendered))
	for {
		var d doc
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("rendered chart: %v", err)
		}
		docs[d.Kind] = d
	}
	p := pod{config: docs["ConfigMap"].Data["chapar.yaml"], env: map[string]string{}}
	containers := docs["Deployment"].Spec.Template.Spec.Containers
	if p.config == "" || len(containers) != 1 {
		t.Fatalf("rendered chart: no chapar.yaml ConfigMap or not one container:\n%s", rendered)
	}
	c := containers[0]
	p.args = c.Args
	for _, from := range c.EnvFrom {
		if from.SecretRef == nil {
			continue
		}
		secret, ok := docs["Secret"]
		if !ok || secret.Metadata.Name != from.SecretRef.Name {
			t.Fatalf("the pod reads Secret %q, which the chart does not render: a default install would not start", from.SecretRef.Name)
		}
		for k, v := range secret.StringData {
			p.env[k] = v
		}
	}
	for _, v := range c.Env {
		switch {
		case v.Value != nil:
			p.env[v.Name] = *v.Value
		case v.ValueFrom != nil && v.ValueFrom.FieldRef != nil && v.ValueFrom.FieldRef.FieldPath == "metadata.name":
			p.env[v.Name] = "chapar-5d8f7c9b4-x2x7q"
		default:
			t.Fatalf("env %s: a source this test does not know", v.Name)
		}
	}
	return p
}
