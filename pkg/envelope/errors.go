package envelope

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Violation is one broken rule, named by the JSON path of the field.
type Violation struct {
	Field   string `json:"field"`
	Problem string `json:"problem"`
}

func (v Violation) String() string {
	if v.Field == "" {
		return v.Problem
	}
	return v.Field + " " + v.Problem
}

// ValidationError lists every violation an envelope has, so a producer can
// fix them all at once.
type ValidationError struct {
	ID         string      `json:"id,omitempty"`
	Violations []Violation `json:"violations"`
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Violations))
	for i, v := range e.Violations {
		parts[i] = v.String()
	}
	return "invalid envelope: " + strings.Join(parts, "; ")
}

type violations []Violation

func (v *violations) add(field, problem string) {
	*v = append(*v, Violation{Field: field, Problem: problem})
}

// str reads an optional string attribute, recording a violation when it is
// present with another JSON type.
func (v *violations) str(attrs map[string]json.RawMessage, key string, into *string) {
	raw, ok := attrs[key]
	if !ok || string(raw) == "null" {
		return
	}
	if err := json.Unmarshal(raw, into); err != nil {
		v.add(key, fmt.Sprintf("must be a string, got %s", raw))
	}
}
