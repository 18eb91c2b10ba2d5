// Command kubecheck helps CI validate the Helm chart's rendered manifests
// offline.
//
// kubecheck schemas writes the JSON schemas kubeconform -strict validates
// against, generated from the Kubernetes OpenAPI document and CRDs that
// come through the Go module proxy (kubeconform downloads its schemas from
// GitHub, which CI cannot reach); see schemas.go.
//
// kubecheck (manifests on stdin) decodes each document strictly into its
// k8s.io/api type, then checks what validates but does not run: a selector
// that does not select its pods, a probe or a Service port naming a port
// the container does not have. -configmaps writes the ConfigMaps' data out
// so CI can run dispatcher config check on the rendered config.
//
// It is a module of its own so the dispatcher does not depend on
// k8s.io/api.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "schemas" {
		if err := schemasCmd(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "kubecheck:", err)
			os.Exit(1)
		}
		return
	}
	configMaps := flag.String("configmaps", "", "write each ConfigMap's data to `DIR`/<name>/<key>, for checks of their own (dispatcher config check)")
	flag.Parse()
	objs, err := check(os.Stdin)
	if err == nil && *configMaps != "" {
		err = writeConfigMaps(objs, *configMaps)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kubecheck:", err)
		os.Exit(1)
	}
	fmt.Printf("kubecheck: %d manifests valid\n", len(objs))
}

func writeConfigMaps(objs []any, dir string) error {
	for _, o := range objs {
		cm, ok := o.(*corev1.ConfigMap)
		if !ok {
			continue
		}
		if err := os.MkdirAll(filepath.Join(dir, cm.Name), 0o755); err != nil {
			return err
		}
		for key, data := range cm.Data {
			if err := os.WriteFile(filepath.Join(dir, cm.Name, key), []byte(data), 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// kinds are the types the chart renders; a kind not here is an error, so
// a new template cannot go unchecked.
func kinds() map[string]func() any {
	return map[string]func() any{
		"v1/ConfigMap":                  func() any { return new(corev1.ConfigMap) },
		"v1/Secret":                     func() any { return new(corev1.Secret) },
		"v1/Service":                    func() any { return new(corev1.Service) },
		"apps/v1/Deployment":            func() any { return new(appsv1.Deployment) },
		"policy/v1/PodDisruptionBudget": func() any { return new(policyv1.PodDisruptionBudget) },
		"monitoring.coreos.com/v1/ServiceMonitor": func() any { return new(monitoringv1.ServiceMonitor) },
	}
}

// check validates every document in r and returns them decoded.
func check(r io.Reader) ([]any, error) {
	docs := utilyaml.NewYAMLReader(bufio.NewReader(r))
	var objs []any
	var errs []error
	for {
		doc, err := docs.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading manifests: %w", err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		obj, err := decode(doc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		objs = append(objs, obj)
	}
	errs = append(errs, crossCheck(objs)...)
	if len(objs) == 0 && len(errs) == 0 {
		errs = append(errs, errors.New("no manifests on stdin"))
	}
	return objs, errors.Join(errs...)
}

func stripComments(doc []byte) []byte {
	var out []byte
	for _, line := range bytes.Split(doc, []byte("\n")) {
		if !bytes.HasPrefix(bytes.TrimSpace(line), []byte("#")) {
			out = append(out, line...)
			out = append(out, '\n')
		}
	}
	return out
}

func decode(doc []byte) (any, error) {
	var meta struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name string `json:"name"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(doc, &meta); err != nil {
		return nil, fmt.Errorf("a document is not YAML: %w", err)
	}
	id := meta.APIVersion + "/" + meta.Kind
	newObj, ok := kinds()[id]
	if !ok {
		return nil, fmt.Errorf("%s %q: kind not known to kubecheck (add its type to kinds)", id, meta.Metadata.Name)
	}
	if meta.Metadata.Name == "" {
		return nil, fmt.Errorf("%s: metadata.name is empty", id)
	}
	obj := newObj()
	// sigs.k8s.io/json is the API server's own strict decoder: its errors
	// give the field's path.
	js, err := yaml.YAMLToJSON(doc)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", id, meta.Metadata.Name, err)
	}
	strict, err := kjson.UnmarshalStrict(js, obj)
	if err = errors.Join(append([]error{err}, strict...)...); err != nil {
		return nil, fmt.Errorf("%s %q: %w", id, meta.Metadata.Name, err)
	}
	return obj, nil
}

// crossCheck finds what decodes but cannot work: Deployments whose
// selector misses their pods' labels, probes on ports the container does
// not name, containers without an image, Services whose selector matches
// no Deployment's pods or whose targetPort no pod has.
func crossCheck(objs []any) []error {
	var errs []error
	var pods []corev1.PodTemplateSpec
	for _, o := range objs {
		d, ok := o.(*appsv1.Deployment)
		if !ok {
			continue
		}
		if d.Spec.Selector == nil || !subset(d.Spec.Selector.MatchLabels, d.Spec.Template.Labels) {
			errs = append(errs, fmt.Errorf("Deployment %q: spec.selector does not match the pod template's labels", d.Name))
		}
		for _, c := range d.Spec.Template.Spec.Containers {
			if c.Name == "" || c.Image == "" {
				errs = append(errs, fmt.Errorf("Deployment %q: a container lacks a name or an image", d.Name))
			}
			for what, p := range map[string]*corev1.Probe{"startupProbe": c.StartupProbe, "livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe} {
				if p != nil && p.HTTPGet != nil && !hasPort(c, p.HTTPGet.Port) {
					errs = append(errs, fmt.Errorf("Deployment %q container %q: %s port %s is not a container port", d.Name, c.Name, what, p.HTTPGet.Port.String()))
				}
			}
		}
		pods = append(pods, d.Spec.Template)
	}
	for _, o := range objs {
		s, ok := o.(*corev1.Service)
		if !ok {
			continue
		}
		var selected []corev1.PodTemplateSpec
		for _, p := range pods {
			if subset(s.Spec.Selector, p.Labels) {
				selected = append(selected, p)
			}
		}
		if len(selected) == 0 {
			errs = append(errs, fmt.Errorf("Service %q: its selector matches no Deployment's pods", s.Name))
		}
		for _, sp := range s.Spec.Ports {
			for _, p := range selected {
				if !podHasPort(p, sp.TargetPort) {
					errs = append(errs, fmt.Errorf("Service %q port %q: targetPort %s is not a container port", s.Name, sp.Name, sp.TargetPort.String()))
				}
			}
		}
	}
	return errs
}

func subset(want, have map[string]string) bool {
	if len(want) == 0 {
		return false
	}
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func hasPort(c corev1.Container, port intstr.IntOrString) bool {
	for _, p := range c.Ports {
		if port.Type == intstr.String && strings.EqualFold(p.Name, port.StrVal) ||
			port.Type == intstr.Int && p.ContainerPort == port.IntVal {
			return true
		}
	}
	return false
}

func podHasPort(p corev1.PodTemplateSpec, port intstr.IntOrString) bool {
	for _, c := range p.Spec.Containers {
		if hasPort(c, port) {
			return true
		}
	}
	return false
}
