package envelope

import (
	"fmt"
	"strings"
)

// Limits on what a producer may put in an envelope's attributes. They bound
// what a hostile or broken producer can make Chapar store, log and forward;
// docs/envelope.md states them for producers.
const (
	// MaxIDBytes bounds the id, which becomes a JetStream Nats-Msg-Id, a
	// dead-letter key and a vendor's message id.
	MaxIDBytes = 256
	// MaxAttributeBytes bounds every other string attribute (source, type,
	// subject, datacontenttype, dataschema) and each extension's value.
	MaxAttributeBytes = 1024
	// MaxDestinations bounds the sinks the destinations extension names.
	MaxDestinations = 32
	// MaxDestinationsBytes bounds the destinations extension as a whole:
	// MaxDestinations names of up to 63 bytes, with separators and spaces.
	MaxDestinationsBytes = 4096
)

// validateDestinations checks the destinations extension: at most
// MaxDestinations comma-separated entries, each a sink name (lower-case
// letters, digits, - and _, as sinks are named in the configuration) with
// optional spaces around it. Empty entries are ignored, as DestinationList
// ignores them.
func validateDestinations(d string, v *violations) {
	if d == "" {
		return
	}
	if n := strings.Count(d, ",") + 1; n > MaxDestinations {
		v.add("destinations", fmt.Sprintf("lists %d entries; the maximum is %d", n, MaxDestinations))
		return
	}
	for i, name := range strings.Split(d, ",") {
		if name = strings.Trim(name, " "); name != "" && !isSinkName(name) {
			v.add(fmt.Sprintf("destinations[%d]", i), fmt.Sprintf("is %s; a sink name is 1 to 63 lower-case letters, digits, - or _, starting with a letter or digit", quote(name)))
		}
	}
}

// isSinkName matches ^[a-z0-9][a-z0-9_-]{0,62}$.
func isSinkName(s string) bool {
	if len(s) == 0 || len(s) > 63 {
		return false
	}
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '-' || c == '_') && i > 0:
		default:
			return false
		}
	}
	return true
}
