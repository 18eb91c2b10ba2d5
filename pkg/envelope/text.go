package envelope

import (
	"strings"
	"unicode/utf8"
)

// Clip shortens a producer-controlled string for a log line or an error
// message: the result is valid UTF-8 (each invalid byte becomes U+FFFD) and at
// most n bytes long, cut on a rune boundary. A string that already fits is
// returned as is, without copying.
func Clip(s string, n int) string {
	if n <= 0 {
		return ""
	}
	if utf8.ValidString(s) {
		if len(s) <= n {
			return s
		}
		for n > 0 && !utf8.RuneStart(s[n]) {
			n--
		}
		return s[:n]
	}
	var b strings.Builder
	b.Grow(min(len(s), n))
	for _, r := range s { // range yields utf8.RuneError for each invalid byte
		if b.Len()+utf8.RuneLen(r) > n {
			break
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ProbeID reads a message's envelope id without validating anything else, so
// that a message Parse rejects can still be logged and dead-lettered under its
// id: the ce-id header in binary mode, else the body's top-level "id" if it is
// a JSON string. The result is passed through Clip(id, MaxIDBytes), so it is
// safe to log however hostile the message; it is "" when there is no id.
func ProbeID(h Headers, data []byte) string {
	if h != nil {
		if id := h.Get(HeaderPrefix + "id"); id != "" {
			return Clip(id, MaxIDBytes)
		}
	}
	// Read members up to the first "id", and not beyond: what follows may
	// be broken.
	s := scanner{b: data}
	s.skipSpace()
	if s.peek() != '{' {
		return ""
	}
	s.i++
	s.skipSpace()
	for s.peek() == '"' {
		start := s.i
		if s.str() != nil {
			return ""
		}
		key := s.b[start:s.i]
		s.skipSpace()
		if s.peek() != ':' {
			return ""
		}
		s.i++
		s.skipSpace()
		start = s.i
		if s.value() != nil {
			return ""
		}
		if val := s.b[start:s.i]; val[0] == '"' && (string(key) == `"id"` || unquote(key) == "id") {
			return Clip(unquote(val), MaxIDBytes)
		}
		s.skipSpace()
		if s.peek() != ',' {
			return ""
		}
		s.i++
		s.skipSpace()
	}
	return ""
}
