package envelope

import (
	"errors"
	"fmt"
	"maps"
	"slices"
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
	// MaxExtensions bounds the extension attributes of one envelope.
	MaxExtensions = 32
	// MaxExtensionNameBytes bounds an extension attribute's name.
	// CloudEvents recommends at most 20 characters; longer names are
	// accepted up to this limit.
	MaxExtensionNameBytes = 64
)

const extensionNameProblem = "is not a valid extension attribute name: 1 to 64 lower-case letters a-z and digits 0-9 (CloudEvents recommends at most 20)"

// isExtensionName matches ^[a-z0-9]{1,64}$, the CloudEvents attribute
// naming rule with a length limit.
func isExtensionName(s string) bool {
	if len(s) == 0 || len(s) > MaxExtensionNameBytes {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// validateExtensions checks extension attributes however they were set: by
// Parse, by ParseMessage from ce- headers, or by a Go producer.
func validateExtensions(ext map[string]string, v *violations) {
	if len(ext) == 0 {
		return
	}
	if len(ext) > MaxExtensions {
		v.add("", fmt.Sprintf("has %d extension attributes; the maximum is %d", len(ext), MaxExtensions))
	}
	for _, name := range slices.Sorted(maps.Keys(ext)) {
		switch {
		case !isExtensionName(name):
			v.add(Clip(name, 64), extensionNameProblem)
		case isAttribute(name):
			v.add(name, "is an attribute, not an extension")
		default:
			v.text(name, ext[name], MaxAttributeBytes)
		}
	}
}

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
		if name = strings.Trim(name, " "); name != "" && !IsSinkName(name) {
			v.add(fmt.Sprintf("destinations[%d]", i), fmt.Sprintf("is %s; a sink name is 1 to 63 lower-case letters, digits, - or _, starting with a letter or digit", quote(name)))
		}
	}
}

// IsSinkName reports whether s is a sink name: ^[a-z0-9][a-z0-9_-]{0,62}$,
// what config allows, a destinations entry may hold, and a JetStream
// consumer and subject token can carry. It is the one definition.
func IsSinkName(s string) bool {
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

// ReservedTypePrefix starts Chapar's own types: a producer's type may not
// use it, so a misspelt Chapar type (chapar.trak) is refused, not carried
// as a type of its own.
const ReservedTypePrefix = "chapar."

// CheckType says what is wrong with t as an event type, or nil: one of
// Chapar's types (Types), or a producer's own. CloudEvents 1.0 asks only
// for a non-empty string; Chapar also publishes the type as the tokens of
// a NATS subject (<prefix>.events.<type>), carries it in dead letters and
// headers, so a type of one's own must be 1 to 1024 bytes (the limit of
// every attribute) of printable ASCII other than * and > (NATS wildcards),
// in dot-separated non-empty tokens (com.example.order.shipped), and must
// not start with chapar. (reserved for Chapar's types: its four, and the
// operational events it publishes itself, OpsTypes).
func CheckType(t string) error {
	if IsChaparType(t) || IsOpsType(t) {
		return nil
	}
	const want = "a type of your own is 1 to 1024 bytes of printable ASCII without spaces, * or >, in dot-separated tokens, e.g. com.example.order.shipped"
	switch {
	case t == "":
		return errors.New("it is empty; use one of " + strings.Join(Types(), ", ") + ", or a type of your own such as com.example.order.shipped")
	case len(t) > MaxAttributeBytes:
		return fmt.Errorf("it is %d bytes; the maximum is %d", len(t), MaxAttributeBytes)
	case strings.HasPrefix(t, ReservedTypePrefix):
		if strings.HasPrefix(t, OpsTypePrefix) {
			return fmt.Errorf("chapar.ops. types are the operational events Chapar publishes: %s", strings.Join(OpsTypes(), ", "))
		}
		return fmt.Errorf("the prefix chapar. is reserved for Chapar's types (%s); name a type of your own under your domain, e.g. com.example.%s",
			strings.Join(Types(), ", "), strings.TrimPrefix(Clip(t, 64), ReservedTypePrefix))
	}
	for i := 0; i < len(t); i++ {
		switch c := t[i]; {
		case c <= ' ' || c >= 0x7f:
			return fmt.Errorf("byte %d is not printable ASCII (a space, a control character or UTF-8); %s", i, want)
		case c == '*' || c == '>':
			return fmt.Errorf("it holds %q, a NATS wildcard; %s", c, want)
		case c == '.' && (i == 0 || i == len(t)-1 || t[i-1] == '.'):
			return fmt.Errorf("it has an empty token (a leading, trailing or double dot); %s", want)
		}
	}
	return nil
}
