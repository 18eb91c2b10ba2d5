// Package configs ships the demo configuration inside the binary, so
// `dispatcher demo` runs from any directory.
package configs

import (
	"bytes"
	_ "embed"
)

//go:embed demo.yaml
var demo []byte

// Demo returns configs/demo.yaml.
func Demo() []byte { return bytes.Clone(demo) }
