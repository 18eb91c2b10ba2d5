package envelope

import (
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
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

// maxViolations bounds the violations an error lists, so that a hostile
// envelope cannot make a megabyte of error text.
const maxViolations = 20

func newValidationError(id string, v violations) *ValidationError {
	if n := len(v); n > maxViolations {
		v = append(v[:maxViolations:maxViolations], Violation{Problem: fmt.Sprintf("and %d more violations", n-maxViolations)})
	}
	return &ValidationError{ID: Clip(id, MaxIDBytes), Violations: v}
}

// quote quotes a producer's value for an error message, clipped to 64 bytes.
func quote(s string) string { return strconv.Quote(Clip(s, 64)) }

// text checks a string attribute: at most max bytes, valid UTF-8 and free of
// NUL. It reports whether the value passed.
func (v *violations) text(field, s string, max int) bool {
	switch {
	case len(s) > max:
		v.add(field, fmt.Sprintf("is %d bytes; the maximum is %d", len(s), max))
	case !utf8.ValidString(s):
		v.add(field, "is not valid UTF-8")
	case strings.IndexByte(s, 0) >= 0:
		v.add(field, "contains a NUL character")
	default:
		return true
	}
	return false
}
