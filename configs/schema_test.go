package configs_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

var update = flag.Bool("update", false, "rewrite chapar.schema.json from the config types")

const schemaFile = "chapar.schema.json"

// The schema is generated from config.Config's types, so it cannot drift
// from what the dispatcher reads: this test fails when the file is stale
// (go test ./configs -run Schema -update rewrites it).
func TestSchemaIsGeneratedFromTheConfigTypes(t *testing.T) {
	got, err := json.MarshalIndent(generateSchema(), "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got = append(got, '\n')
	if *update {
		if err := os.WriteFile(schemaFile, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: run go test ./configs -run Schema -update", schemaFile)
	}
}

// Every config shipped under configs/ validates, and points editors at the
// schema.
func TestShippedConfigsValidateAgainstTheSchema(t *testing.T) {
	sch := compileSchema(t)
	files, _ := filepath.Glob("*.yaml")
	n := 0
	for _, f := range files {
		n++
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(raw), "# yaml-language-server: $schema=./"+schemaFile+"\n") {
			t.Errorf("%s does not point yaml-language-server at %s", f, schemaFile)
		}
		if err := sch.Validate(yamlToJSON(t, raw)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if n < 3 {
		t.Fatalf("only %d configs found", n)
	}
}

// The schema catches what editors should underline.
func TestSchemaRefusesMistakes(t *testing.T) {
	sch := compileSchema(t)
	for name, doc := range map[string]string{
		"unknown key":          "dispatcher: {concurency: 3}",
		"duration as number":   "dispatcher: {ack_wait: 30}",
		"bad storage":          "streams: {storage: disk}",
		"bad replicas":         "streams: {replicas: 2}",
		"sink without name":    "sinks: [{vendor: chabok}]",
		"bad sink name":        "sinks: [{name: Chabok Main, vendor: chabok}]",
		"unknown type":         "routes: [{types: [chapar.click], sinks: [x]}]",
		"type with a space":    "routes: [{types: [com.shop order], sinks: [x]}]",
		"type with a wildcard": "routes: [{types: [com.shop.*], sinks: [x]}]",
		"route without sinks":  "routes: [{types: [chapar.track]}]",
		"string concurrency":   "sink_defaults: {concurrency: many}",
		"order word":           "sinks: [{name: a, vendor: chabok, order: by_usr}]",
		"order unknown key":    "sinks: [{name: a, vendor: chabok, order: {by: user}}]",
	} {
		if err := sch.Validate(yamlToJSON(t, []byte(doc))); err == nil {
			t.Errorf("%s: %s accepted", name, doc)
		}
	}
	for name, doc := range map[string]string{
		"reference in a number": "sink_defaults: {concurrency: '${CONCURRENCY}'}",
		"zero duration":         "streams: {max_age: 0}",
		"compound duration":     "streams: {max_age: 1h30m}",
		"vendor settings":       "sinks: [{name: a, vendor: chabok, settings: {app_id: x, access_token: '${T}'}}]",
		"order by user":         "sinks: [{name: a, vendor: chabok, order: by_user}]",
		"order key template":    "sinks: [{name: a, vendor: chabok, order: {key: '{{.Subject}}'}}]",
		"a type of one's own":   "routes: [{types: [com.shop.order.shipped], sinks: [hook]}]",
	} {
		if err := sch.Validate(yamlToJSON(t, []byte(doc))); err != nil {
			t.Errorf("%s: %s refused: %v", name, doc, err)
		}
	}
}

func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource(schemaFile, doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(schemaFile)
	if err != nil {
		t.Fatal(err)
	}
	return sch
}

func yamlToJSON(t *testing.T, raw []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	if v == nil {
		v = map[string]any{}
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return doc
}

type schema = map[string]any

// refined adds what the types do not say, by key path ([] for a list item).
var refined = map[string]schema{
	"streams.storage":       {"enum": []any{"file", "memory"}},
	"streams.replicas":      {"enum": []any{1, 3, 5}},
	"dispatcher.log_format": {"enum": []any{"json", "console"}},
	"dispatcher.log_level":  {"enum": []any{"debug", "info", "warn", "error", "dpanic", "panic", "fatal"}},
	"sinks[].name":          {"pattern": "^[a-z0-9][a-z0-9_-]{0,62}$"},
	"routes[].types[]":      typeSchema(),
	"data_schemas":          {"description": "A JSON Schema (draft 2020-12) of an event type's data, by type; docs/envelope.md#a-type-of-your-own", "propertyNames": typeSchema()},
	"routes[].sinks":        {"minItems": 1},
	"routes[].filter":       {"description": "A condition (expr-lang) on the event's id, source, type, subject, time, name, extensions and data, e.g. data.properties.amount >= 1000000; docs/sinks.md#content-filters"},
	"sinks[].settings":      {"description": "The vendor's own keys (credentials, units); docs/sinks.md lists them."},
	"sinks[].base_url":      {"description": "The vendor's API root; http or https. Empty: the vendor's default."},
	"sinks[].order.key":     {"description": "by_user, or a Go template over the event, e.g. {{.Extensions.tenant}}/{{.Subject}}; docs/sinks.md#order"},
}

var required = map[string][]string{
	"sinks[]":  {"name", "vendor"},
	"routes[]": {"sinks"},
}

// typeSchema is a route's type as the envelope's schema states it: one of
// Chapar's types, or a type of the producer's own (envelope.CheckType).
func typeSchema() schema {
	var doc struct {
		Properties struct {
			Type schema `json:"type"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(envelope.Schema(), &doc); err != nil || doc.Properties.Type == nil {
		panic(fmt.Sprintf("envelope schema has no type: %v", err))
	}
	return doc.Properties.Type
}

func generateSchema() schema {
	s := schemaOf(reflect.TypeOf(config.Config{}), "")
	s["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	s["$id"] = "https://github.com/chapar-dev/chapar/configs/chapar.schema.json"
	s["title"] = "Chapar dispatcher configuration"
	s["description"] = "Generated from internal/config by configs/schema_test.go; configs/chapar.example.yaml explains every key."
	s["$defs"] = schema{
		"reference": schema{"type": "string", "pattern": `^\$\{[^}]+\}$`, "description": "${VAR} or ${file:/path}, resolved at start"},
		"duration": schema{"anyOf": []any{
			schema{"type": "string", "pattern": `^(0|-?([0-9]+(\.[0-9]*)?(ns|us|µs|ms|s|m|h))+)$`},
			schema{"const": 0},
			schema{"$ref": "#/$defs/reference"},
		}, "description": "a Go duration with its unit: 500ms, 10s, 5m, 1h30m"},
	}
	return s
}

var durationType = reflect.TypeOf(time.Duration(0))
var nodeType = reflect.TypeOf(yaml.Node{})

// shorthands are keys that also take a word for a common mapping:
// order: by_user is order: {key: by_user}.
var shorthands = map[string]schema{
	"sinks[].order": {"const": config.OrderByUser, "description": "per user: the partitionkey extension, else the subject"},
}

func schemaOf(t reflect.Type, at string) schema {
	s := typed(t, at)
	if short, ok := shorthands[at]; ok {
		s = schema{"anyOf": []any{short, s}}
	}
	for k, v := range refined[at] {
		s[k] = v
	}
	return s
}

func orReference(s schema) schema {
	return schema{"anyOf": []any{s, schema{"$ref": "#/$defs/reference"}}}
}

func typed(t reflect.Type, at string) schema {
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == durationType:
		return schema{"$ref": "#/$defs/duration"}
	case t == nodeType:
		return schema{"type": "object"}
	}
	switch t.Kind() {
	case reflect.Struct:
		props := schema{}
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
			if !f.IsExported() || name == "" || name == "-" {
				continue
			}
			key := name
			if at != "" {
				key = at + "." + name
			}
			props[name] = schemaOf(f.Type, key)
		}
		s := schema{"type": "object", "properties": props, "additionalProperties": false}
		if r, ok := required[at]; ok {
			s["required"] = r
		}
		return s
	case reflect.Slice:
		return schema{"type": "array", "items": schemaOf(t.Elem(), at+"[]")}
	case reflect.Map:
		return schema{"type": "object", "additionalProperties": schemaOf(t.Elem(), at+".*")}
	case reflect.String:
		return schema{"type": "string"}
	case reflect.Bool:
		return orReference(schema{"type": "boolean"})
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint32, reflect.Uint64:
		return orReference(schema{"type": "integer"})
	case reflect.Float64, reflect.Float32:
		return orReference(schema{"type": "number"})
	}
	panic("schema: no mapping for " + t.String() + " at " + at)
}
