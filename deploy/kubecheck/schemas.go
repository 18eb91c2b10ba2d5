package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"
)

// schemasCmd writes kubeconform's strict, standalone JSON schemas for the
// kinds kubecheck knows, from the Kubernetes OpenAPI document
// (api/openapi-spec/swagger.json of the k8s.io/kubernetes module) and from
// CRD manifests (prometheus-operator's), so kubeconform runs without
// GitHub. Files are named as kubeconform's template
// {{ .ResourceKind }}{{ .KindSuffix }}.json expects: deployment-apps-v1.json,
// service-v1.json, servicemonitor-monitoring-v1.json.
//
// The conversion is openapi2jsonschema's, which kubeconform's published
// schemas come from: references inlined, additionalProperties false on
// every object that lists its properties (strict), int-or-string and
// quantities as either type, and null allowed where a type is.
func schemasCmd(args []string) error {
	fs := flag.NewFlagSet("schemas", flag.ContinueOnError)
	openapi := fs.String("openapi", "", "the Kubernetes OpenAPI v2 `FILE` (swagger.json)")
	out := fs.String("out", "", "write the schemas to `DIR`")
	var crds []string
	fs.Func("crd", "a CustomResourceDefinition `FILE` (repeatable)", func(s string) error { crds = append(crds, s); return nil })
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *openapi == "" || *out == "" {
		return errors.New("schemas: -openapi FILE and -out DIR are required")
	}
	want := map[string]bool{}
	for id := range kinds() {
		want[id] = true
	}
	return writeSchemas(*openapi, crds, *out, want)
}

// writeSchemas writes the schemas of the kinds in want ("apiVersion/Kind")
// from the OpenAPI document and the CRD files to out.
func writeSchemas(openapi string, crds []string, out string, want map[string]bool) error {
	schemas := map[string]any{} // "apiVersion/Kind" → schema
	if err := openAPISchemas(openapi, want, schemas); err != nil {
		return err
	}
	for _, f := range crds {
		if err := crdSchemas(f, schemas); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	var missing []string
	for id := range want {
		schema, ok := schemas[id]
		if !ok {
			missing = append(missing, id)
			continue
		}
		b, err := json.Marshal(schema)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(out, schemaFile(id)), b, 0o644); err != nil {
			return err
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("schemas: no schema for %s in the given files", strings.Join(missing, ", "))
	}
	return nil
}

// schemaFile is kubeconform's {{ .ResourceKind }}{{ .KindSuffix }}.json
// for "apiVersion/Kind".
func schemaFile(id string) string {
	i := strings.LastIndex(id, "/")
	apiVersion, kind := id[:i], id[i+1:]
	group, version, ok := strings.Cut(apiVersion, "/")
	suffix := "-" + strings.ToLower(strings.Split(group, ".")[0])
	if ok {
		suffix += "-" + strings.ToLower(version)
	}
	return strings.ToLower(kind) + suffix + ".json"
}

func openAPISchemas(file string, want map[string]bool, schemas map[string]any) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var doc struct {
		Definitions map[string]map[string]any `json:"definitions"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	for name, def := range doc.Definitions {
		gvks, _ := def["x-kubernetes-group-version-kind"].([]any)
		for _, g := range gvks {
			gvk, _ := g.(map[string]any)
			group, _ := gvk["group"].(string)
			version, _ := gvk["version"].(string)
			kind, _ := gvk["kind"].(string)
			apiVersion := version
			if group != "" {
				apiVersion = group + "/" + version
			}
			id := apiVersion + "/" + kind
			if !want[id] {
				continue
			}
			s := inline(doc.Definitions, name, map[string]bool{}).(map[string]any)
			if props, ok := s["properties"].(map[string]any); ok {
				// Top-level apiVersion and kind are these, as in
				// openapi2jsonschema's output.
				props["apiVersion"] = map[string]any{"type": "string", "enum": []any{apiVersion}}
				props["kind"] = map[string]any{"type": "string", "enum": []any{kind}}
			}
			schemas[id] = s
		}
	}
	return nil
}

// inline returns definition name with its references replaced by what
// they name, recursively; a reference back into its own chain (a
// recursive type, JSONSchemaProps) becomes {} (anything).
func inline(defs map[string]map[string]any, name string, chain map[string]bool) any {
	switch name {
	case "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
		return map[string]any{"oneOf": []any{map[string]any{"type": []any{"string", "null"}}, map[string]any{"type": []any{"integer", "null"}}}}
	case "io.k8s.apimachinery.pkg.api.resource.Quantity":
		return map[string]any{"oneOf": []any{map[string]any{"type": []any{"string", "null"}}, map[string]any{"type": []any{"number", "null"}}}}
	}
	def, ok := defs[name]
	if !ok || chain[name] {
		return map[string]any{}
	}
	chain[name] = true
	defer delete(chain, name)
	return convert(def, func(ref string) any {
		return inline(defs, strings.TrimPrefix(ref, "#/definitions/"), chain)
	})
}

// convert is v with references resolved by deref, strict objects and
// nullable types.
func convert(v any, deref func(string) any) any {
	switch x := v.(type) {
	case map[string]any:
		if ref, ok := x["$ref"].(string); ok {
			return deref(ref)
		}
		out := make(map[string]any, len(x)+1)
		for k, val := range x {
			if k == "properties" {
				// Property names are data, not keywords: convert the values only.
				props := map[string]any{}
				for p, pv := range val.(map[string]any) {
					props[p] = convert(pv, deref)
				}
				out[k] = props
				continue
			}
			out[k] = convert(val, deref)
		}
		if _, hasProps := out["properties"]; hasProps {
			if _, set := out["additionalProperties"]; !set && out["x-kubernetes-preserve-unknown-fields"] != true {
				out["additionalProperties"] = false
			}
		}
		if out["x-kubernetes-int-or-string"] == true {
			delete(out, "anyOf")
			delete(out, "type")
			out["oneOf"] = []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}
		}
		if t, ok := out["type"].(string); ok {
			out["type"] = []any{t, "null"}
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = convert(e, deref)
		}
		return out
	default:
		return v
	}
}

// crdSchemas adds the openAPIV3Schema of each version a CRD file serves.
func crdSchemas(file string, schemas map[string]any) error {
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var crd struct {
		Spec struct {
			Group string `json:"group"`
			Names struct {
				Kind string `json:"kind"`
			} `json:"names"`
			Versions []struct {
				Name   string `json:"name"`
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				} `json:"schema"`
			} `json:"versions"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(b, &crd); err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if len(crd.Spec.Versions) == 0 {
		return fmt.Errorf("%s: not a CustomResourceDefinition with versions", file)
	}
	for _, v := range crd.Spec.Versions {
		if v.Schema.OpenAPIV3Schema == nil {
			return fmt.Errorf("%s: version %s has no openAPIV3Schema", file, v.Name)
		}
		schemas[crd.Spec.Group+"/"+v.Name+"/"+crd.Spec.Names.Kind] = convert(v.Schema.OpenAPIV3Schema, func(string) any { return map[string]any{} })
	}
	return nil
}
