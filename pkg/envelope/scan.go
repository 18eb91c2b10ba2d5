package envelope

import (
	"bytes"
	"fmt"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// textFlags describe the strings (keys included) in a scanned JSON value.
type textFlags uint8

const (
	hasEscape textFlags = 1 << iota // a backslash escape
	badUTF8                         // bytes that are not UTF-8, or a lone surrogate escape
	hasNUL                          // a \u0000 escape (JSON forbids a raw NUL in a string)
)

// maxDepth bounds nesting as encoding/json does.
const maxDepth = 10000

// scanner checks JSON syntax without building values, so that Parse can find
// the top-level members of an envelope and their raw values in one pass, and
// see what encoding/json hides: it decodes invalid UTF-8 and lone surrogates
// to U+FFFD without a word.
type scanner struct {
	b     []byte
	i     int
	depth int
	flags textFlags // accumulated over every string scanned
}

type syntaxError struct {
	msg string
	off int
}

func (e *syntaxError) Error() string { return fmt.Sprintf("%s at byte %d", e.msg, e.off) }

func (s *scanner) fail(msg string) error { return &syntaxError{msg: msg, off: s.i} }

func (s *scanner) unexpected() error {
	if s.i >= len(s.b) {
		return s.fail("unexpected end of JSON")
	}
	return s.fail("invalid character " + quoteByte(s.b[s.i]))
}

func quoteByte(c byte) string {
	if c < utf8.RuneSelf {
		return strconv.QuoteRune(rune(c))
	}
	return fmt.Sprintf("'\\x%02x'", c)
}

func (s *scanner) skipSpace() {
	for s.i < len(s.b) {
		switch s.b[s.i] {
		case ' ', '\t', '\n', '\r':
			s.i++
		default:
			return
		}
	}
}

// peek is the byte at the cursor, or 0 at the end.
func (s *scanner) peek() byte {
	if s.i < len(s.b) {
		return s.b[s.i]
	}
	return 0
}

// value scans one JSON value starting at the cursor (no leading space).
func (s *scanner) value() error {
	switch c := s.peek(); {
	case c == '{':
		return s.object()
	case c == '[':
		return s.array()
	case c == '"':
		return s.str()
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || c >= '0' && c <= '9':
		return s.number()
	}
	return s.unexpected()
}

func (s *scanner) object() error {
	if s.depth++; s.depth > maxDepth {
		return s.fail("JSON nested too deeply")
	}
	s.i++ // {
	s.skipSpace()
	if s.peek() == '}' {
		s.i++
		s.depth--
		return nil
	}
	for {
		if s.peek() != '"' {
			return s.unexpected()
		}
		if err := s.str(); err != nil {
			return err
		}
		s.skipSpace()
		if s.peek() != ':' {
			return s.unexpected()
		}
		s.i++
		s.skipSpace()
		if err := s.value(); err != nil {
			return err
		}
		s.skipSpace()
		switch s.peek() {
		case ',':
			s.i++
			s.skipSpace()
		case '}':
			s.i++
			s.depth--
			return nil
		default:
			return s.unexpected()
		}
	}
}

func (s *scanner) array() error {
	if s.depth++; s.depth > maxDepth {
		return s.fail("JSON nested too deeply")
	}
	s.i++ // [
	s.skipSpace()
	if s.peek() == ']' {
		s.i++
		s.depth--
		return nil
	}
	for {
		if err := s.value(); err != nil {
			return err
		}
		s.skipSpace()
		switch s.peek() {
		case ',':
			s.i++
			s.skipSpace()
		case ']':
			s.i++
			s.depth--
			return nil
		default:
			return s.unexpected()
		}
	}
}

// str scans a string, noting in s.flags what it holds.
func (s *scanner) str() error {
	s.i++ // "
	for s.i < len(s.b) {
		c := s.b[s.i]
		switch {
		case c == '"':
			s.i++
			return nil
		case c == '\\':
			s.flags |= hasEscape
			if err := s.escape(); err != nil {
				return err
			}
		case c < 0x20:
			return s.fail("control character in string")
		case c < utf8.RuneSelf:
			s.i++
		default:
			r, size := utf8.DecodeRune(s.b[s.i:])
			if r == utf8.RuneError && size == 1 {
				s.flags |= badUTF8
			}
			s.i += size
		}
	}
	return s.fail("unexpected end of JSON in string")
}

func (s *scanner) escape() error {
	s.i++ // \
	switch s.peek() {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.i++
		return nil
	case 'u':
	default:
		return s.unexpected()
	}
	r := hex4(s.b[s.i+1:])
	if r < 0 {
		return s.fail("invalid \\u escape")
	}
	s.i += 5
	switch {
	case r == 0:
		s.flags |= hasNUL
	case r >= 0xD800 && r < 0xDC00: // high surrogate: a low one must follow
		if len(s.b) >= s.i+6 && s.b[s.i] == '\\' && s.b[s.i+1] == 'u' {
			if r2 := hex4(s.b[s.i+2:]); r2 >= 0xDC00 && r2 < 0xE000 {
				s.i += 6
				return nil
			}
		}
		s.flags |= badUTF8
	case r >= 0xDC00 && r < 0xE000:
		s.flags |= badUTF8
	}
	return nil
}

// hex4 decodes the four hex digits at the start of b, or returns -1.
func hex4(b []byte) rune {
	if len(b) < 4 {
		return -1
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c -= 'a' - 10
		case c >= 'A' && c <= 'F':
			c -= 'A' - 10
		default:
			return -1
		}
		r = r<<4 | rune(c)
	}
	return r
}

func (s *scanner) literal(word string) error {
	if !bytes.HasPrefix(s.b[s.i:], []byte(word)) {
		return s.fail("invalid literal")
	}
	s.i += len(word)
	return nil
}

// number scans -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() error {
	if s.peek() == '-' {
		s.i++
	}
	switch c := s.peek(); {
	case c == '0':
		s.i++
	case c >= '1' && c <= '9':
		s.digits()
	default:
		return s.unexpected()
	}
	if s.peek() == '.' {
		s.i++
		if !s.digits() {
			return s.unexpected()
		}
	}
	if c := s.peek(); c == 'e' || c == 'E' {
		s.i++
		if c := s.peek(); c == '+' || c == '-' {
			s.i++
		}
		if !s.digits() {
			return s.unexpected()
		}
	}
	return nil
}

func (s *scanner) digits() bool {
	start := s.i
	for s.i < len(s.b) && s.b[s.i] >= '0' && s.b[s.i] <= '9' {
		s.i++
	}
	return s.i > start
}

// unquote decodes a JSON string the scanner accepted, quotes included.
// Unlike encoding/json it keeps what is wrong with it, so that validation can
// reject the string instead of passing U+FFFD on: invalid bytes are copied,
// and a lone surrogate escape becomes its 3-byte encoding, which is not UTF-8.
func unquote(raw []byte) string {
	raw = raw[1 : len(raw)-1]
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw)
	}
	b := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			b = append(b, c)
			i++
			continue
		}
		switch raw[i+1] {
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r := hex4(raw[i+2:])
			i += 6
			if !utf16.IsSurrogate(r) {
				b = utf8.AppendRune(b, r)
				continue
			}
			if r < 0xDC00 && len(raw) >= i+6 && raw[i] == '\\' && raw[i+1] == 'u' {
				if r2 := hex4(raw[i+2:]); r2 >= 0xDC00 && r2 < 0xE000 {
					b = utf8.AppendRune(b, utf16.DecodeRune(r, r2))
					i += 6
					continue
				}
			}
			b = append(b, 0xE0|byte(r>>12), 0x80|byte(r>>6)&0x3F, 0x80|byte(r)&0x3F)
			continue
		default: // " \ /
			b = append(b, raw[i+1])
		}
		i += 2
	}
	return string(b)
}

// textProblem says what is wrong with a string scanned with flags f, or "".
func textProblem(f textFlags) string {
	switch {
	case f&badUTF8 != 0:
		return "is not valid UTF-8"
	case f&hasNUL != 0:
		return "contains a NUL character"
	}
	return ""
}

// badStrings names, by path, every string in the JSON value at the cursor
// that is not valid UTF-8 or holds a NUL. The value must be valid JSON; this
// is the slow path, run only when a scan has flagged such a string.
func (s *scanner) badStrings(at string, v *violations) {
	switch s.peek() {
	case '{':
		s.i++
		s.skipSpace()
		for s.peek() == '"' {
			start := s.i
			s.flags = 0
			_ = s.str()
			if p := textProblem(s.flags); p != "" {
				v.add(at, "has a key that "+p)
			}
			key := Clip(unquote(s.b[start:s.i]), 64)
			s.skipSpace()
			s.i++ // :
			s.skipSpace()
			s.badStrings(at+"."+key, v)
			s.skipSpace()
			if s.peek() == ',' {
				s.i++
				s.skipSpace()
			}
		}
		s.i++ // }
	case '[':
		s.i++
		s.skipSpace()
		for n := 0; s.peek() != ']' && s.i < len(s.b); n++ {
			before := s.i
			s.badStrings(fmt.Sprintf("%s[%d]", at, n), v)
			if s.i == before {
				return // not valid JSON after all
			}
			s.skipSpace()
			if s.peek() == ',' {
				s.i++
				s.skipSpace()
			}
		}
		s.i++ // ]
	case '"':
		s.flags = 0
		_ = s.str()
		if p := textProblem(s.flags); p != "" {
			v.add(at, p)
		}
	default:
		_ = s.value()
	}
}
