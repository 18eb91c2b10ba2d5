// Package dataschema checks an event's data against the JSON Schema the
// config gives its type (data_schemas): compiled once at start, so a bad
// schema is a config error naming its key, and checked as each event is
// parsed, so data that does not match is dead-lettered invalid_envelope.
//
// Schemas are JSON Schema (draft 2020-12 unless a $schema says otherwise),
// checked by github.com/santhosh-tekuri/jsonschema/v6, with format
// asserted (a date-time must be one). A schema may $ref only itself.
package dataschema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Set is the compiled schemas, by event type. The zero value and nil
// check nothing. It is read-only once compiled, safe for concurrent use.
type Set struct {
	byType map[string]*jsonschema.Schema
}

// key is the config key of a type's schema.
func key(t string) string { return "data_schemas." + t }

// Compile compiles the config's data_schemas, naming every bad type or
// schema by its key.
func Compile(schemas map[string]yaml.Node) (*Set, error) {
	set := &Set{byType: map[string]*jsonschema.Schema{}}
	var errs []error
	for _, t := range slices.Sorted(maps.Keys(schemas)) {
		if err := envelope.CheckType(t); err != nil {
			errs = append(errs, fmt.Errorf("%s: %q is not an event type: %w", key(t), t, err))
			continue
		}
		sch, err := compile(t, schemas[t])
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %s; write a JSON Schema (an object such as {type: object, required: [order]})",
				key(t), oneLine(err.Error())))
			continue
		}
		set.byType[t] = sch
	}
	return set, errors.Join(errs...)
}

func compile(t string, n yaml.Node) (*jsonschema.Schema, error) {
	var v any
	if err := n.Decode(&v); err != nil {
		return nil, err
	}
	if _, ok := v.(map[string]any); !ok {
		return nil, errors.New("is not a mapping")
	}
	// Through JSON, so that the schema is what the library reads from a
	// file: JSON numbers, string keys.
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, err
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	// No loader: a $ref to a file or URL fails to compile, so a schema
	// cannot make the dispatcher read the disk or the network.
	c.UseLoader(noLoader{})
	url := "urn:chapar:data_schemas:" + t
	if err := c.AddResource(url, doc); err != nil {
		return nil, err
	}
	return c.Compile(url)
}

type noLoader struct{}

func (noLoader) Load(url string) (any, error) {
	return nil, fmt.Errorf("$ref %s: a data schema may refer only to itself", url)
}

// maxProblem bounds the text of a mismatch, as envelope errors are bounded.
const maxProblem = 1024

// Check validates data (absent data is null) against eventType's schema;
// a type without one passes. The error is an *envelope.ValidationError
// naming data, for the dead letter.
func (s *Set) Check(eventType string, data []byte) error {
	if s == nil {
		return nil
	}
	sch, ok := s.byType[eventType]
	if !ok {
		return nil
	}
	var v any
	if len(bytes.TrimSpace(data)) > 0 {
		var err error
		if v, err = jsonschema.UnmarshalJSON(bytes.NewReader(data)); err != nil {
			return problem("is not valid JSON: " + err.Error())
		}
	}
	if err := sch.Validate(v); err != nil {
		var verr *jsonschema.ValidationError
		msg := err.Error()
		if errors.As(err, &verr) {
			msg = leaves(verr)
		}
		return problem(fmt.Sprintf("does not match %s: %s", key(eventType), msg))
	}
	return nil
}

// leaves lists the deepest causes, each at its instance location: what to
// fix, without the library's multi-line tree.
func leaves(e *jsonschema.ValidationError) string {
	english := message.NewPrinter(language.English) // the library's words
	var out []string
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) == 0 {
			at := "/" + strings.Join(e.InstanceLocation, "/")
			out = append(out, fmt.Sprintf("at %s: %s", at, oneLine(e.ErrorKind.LocalizedString(english))))
			return
		}
		for _, c := range e.Causes {
			walk(c)
		}
	}
	walk(e)
	return strings.Join(out, "; ")
}

func problem(p string) error {
	if len(p) > maxProblem {
		p = envelope.Clip(p, maxProblem) + "…"
	}
	return &envelope.ValidationError{Violations: []envelope.Violation{{Field: "data", Problem: p}}}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
