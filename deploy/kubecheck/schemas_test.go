package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// A small OpenAPI document and CRD in kubeconform's shapes: the schemas
// written are standalone (references inlined), strict (no unknown
// property), take int-or-string as either type, and are named as
// kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}.json looks them up.
func TestSchemas(t *testing.T) {
	dir := t.TempDir()
	openapi := filepath.Join(dir, "swagger.json")
	writeFile(t, openapi, `{"definitions": {
	  "io.k8s.api.core.v1.Service": {"type": "object",
	    "x-kubernetes-group-version-kind": [{"group": "", "version": "v1", "kind": "Service"}],
	    "properties": {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
	      "spec": {"$ref": "#/definitions/io.k8s.api.core.v1.ServiceSpec"}}},
	  "io.k8s.api.core.v1.ServiceSpec": {"type": "object", "required": ["ports"],
	    "properties": {"ports": {"type": "array", "items": {"$ref": "#/definitions/io.k8s.api.core.v1.ServicePort"}},
	      "selector": {"type": "object", "additionalProperties": {"type": "string"}}}},
	  "io.k8s.api.core.v1.ServicePort": {"type": "object",
	    "properties": {"targetPort": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.util.intstr.IntOrString"},
	      "self": {"$ref": "#/definitions/io.k8s.api.core.v1.ServicePort"}}},
	  "io.k8s.apimachinery.pkg.util.intstr.IntOrString": {"type": "string", "format": "int-or-string"}
	}}`)
	crd := filepath.Join(dir, "crd.yaml")
	writeFile(t, crd, `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor}
  versions:
    - name: v1
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              properties:
                port: {x-kubernetes-int-or-string: true, anyOf: [{type: integer}, {type: string}]}
                free: {type: object, x-kubernetes-preserve-unknown-fields: true, properties: {a: {type: string}}}
`)
	want := map[string]bool{"v1/Service": true, "monitoring.coreos.com/v1/ServiceMonitor": true}
	out := filepath.Join(dir, "schemas")
	if err := writeSchemas(openapi, []string{crd}, out, want); err != nil {
		t.Fatal(err)
	}
	svc := readJSON(t, filepath.Join(out, "service-v1.json"))
	sm := readJSON(t, filepath.Join(out, "servicemonitor-monitoring-v1.json"))
	nullable := func(typ string) any { return []any{typ, "null"} }
	eitherType := []any{map[string]any{"type": nullable("string")}, map[string]any{"type": nullable("integer")}}
	cases := []struct {
		what string
		got  any
		want any
	}{
		{"strict at the top", get(svc, "additionalProperties"), false},
		{"kind pinned", get(svc, "properties", "kind", "enum"), []any{"Service"}},
		{"reference inlined, strict", get(svc, "properties", "spec", "additionalProperties"), false},
		{"required kept", get(svc, "properties", "spec", "required"), []any{"ports"}},
		{"a map stays a map", get(svc, "properties", "spec", "properties", "selector", "additionalProperties"), map[string]any{"type": nullable("string")}},
		{"int-or-string", get(svc, "properties", "spec", "properties", "ports", "items", "properties", "targetPort", "oneOf"), eitherType},
		{"recursion cut", get(svc, "properties", "spec", "properties", "ports", "items", "properties", "self"), map[string]any{}},
		{"nullable", get(svc, "properties", "spec", "type"), nullable("object")},
		{"CRD strict", get(sm, "properties", "spec", "additionalProperties"), false},
		{"CRD int-or-string", get(sm, "properties", "spec", "properties", "port", "oneOf"), []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}},
		{"CRD free-form stays open", get(sm, "properties", "spec", "properties", "free", "additionalProperties"), nil},
	}
	for _, c := range cases {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %#v, want %#v", c.what, c.got, c.want)
		}
	}

	// A kind wanted that the files do not define is an error.
	want["apps/v1/Deployment"] = true
	if err := writeSchemas(openapi, []string{crd}, out, want); err == nil {
		t.Error("a missing kind's schema was not reported")
	}
}

func TestSchemaFile(t *testing.T) {
	for id, want := range map[string]string{
		"v1/Service":                              "service-v1.json",
		"apps/v1/Deployment":                      "deployment-apps-v1.json",
		"policy/v1/PodDisruptionBudget":           "poddisruptionbudget-policy-v1.json",
		"monitoring.coreos.com/v1/ServiceMonitor": "servicemonitor-monitoring-v1.json",
	} {
		if got := schemaFile(id); got != want {
			t.Errorf("schemaFile(%q) = %q, want %q", id, got, want)
		}
	}
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func readJSON(t *testing.T, name string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// get walks nested objects; nil when a key is missing.
func get(v any, path ...string) any {
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[p]
	}
	return v
}
