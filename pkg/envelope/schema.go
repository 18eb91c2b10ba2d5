package envelope

import (
	"bytes"
	_ "embed"
)

//go:embed schema.json
var schema []byte

// Schema returns the JSON Schema (draft 2020-12) of the envelope, for
// producers in other languages. It states the same rules as Parse.
func Schema() []byte { return bytes.Clone(schema) }
