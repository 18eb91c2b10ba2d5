package sinks

import (
	"encoding/json"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Chabok's request bodies (one track item, or a trackBulk array of them)
// written straight into the request's buffer, without encoding/json's
// reflection and its map-key sort through reflect values: building the
// body was a tenth of a Chabok delivery's CPU in the dispatcher, and of a
// trackBulk batch's (profiles in docs/benchmarks.md).
//
// The bytes are encoding/json's, exactly: the same field order and
// omitempty, map keys sorted, and strings as json.Marshal writes them.
// Only the plain case is written here: strings of printable ASCII without
// the characters encoding/json escapes (" \ < > &), or valid UTF-8 beyond
// ASCII other than U+2028 and U+2029; property values that are strings,
// booleans, valid json.Numbers or arrays of those. Anything else makes
// the whole body go through json.Marshal as before.
// TestChabokBodyIsEncodingJSONs and FuzzChabokBody hold the two to the
// same bytes.

// bodyAppender is a request body that can write itself as JSON, or says
// (ok false) that json.Marshal must.
type bodyAppender interface {
	appendJSON(b []byte) (out []byte, ok bool)
}

// chabokEvents is a trackBulk body.
type chabokEvents []chabokEvent

func (es chabokEvents) appendJSON(b []byte) ([]byte, bool) {
	if es == nil {
		return append(b, "null"...), true
	}
	b = append(b, '[')
	for i := range es {
		if i > 0 {
			b = append(b, ',')
		}
		start := len(b)
		var ok bool
		if b, ok = es[i].appendJSON(b); !ok {
			return b, false
		}
		if i == 0 { // room for the rest at the first one's size, not by doubling
			b = slices.Grow(b, (len(b)-start+1)*(len(es)-1)+1)
		}
	}
	return append(b, ']'), true
}

func (e chabokEvent) appendJSON(b []byte) ([]byte, bool) {
	ok := true
	b = append(b, '{')
	if e.InstallationID != "" {
		b = append(b, `"installationId":`...)
		b = appendPlainString(b, e.InstallationID, &ok)
		b = append(b, ',')
	}
	if e.UserID != "" {
		b = append(b, `"userId":`...)
		b = appendPlainString(b, e.UserID, &ok)
		b = append(b, ',')
	}
	b = append(b, `"eventName":`...)
	b = appendPlainString(b, e.EventName, &ok)
	b = append(b, `,"eventTime":`...)
	b = strconv.AppendInt(b, e.EventTime, 10)
	if len(e.EventData) > 0 {
		b = append(b, `,"eventData":{`...)
		keys := make([]string, 0, 16) // on the stack for up to 16 properties
		for k := range e.EventData {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendPlainString(b, k, &ok)
			b = append(b, ':')
			b = appendPlainValue(b, e.EventData[k], true, &ok)
		}
		b = append(b, '}')
	}
	if e.Revenue != "" {
		b = append(b, `,"revenue":`...)
		b = appendPlainValue(b, e.Revenue, false, &ok)
	}
	if e.Currency != "" {
		b = append(b, `,"currency":`...)
		b = appendPlainString(b, e.Currency, &ok)
	}
	return append(b, '}'), ok
}

// appendPlainValue writes a property value (or, with array false, a
// scalar only), or clears ok.
func appendPlainValue(b []byte, v any, array bool, ok *bool) []byte {
	switch x := v.(type) {
	case string:
		return appendPlainString(b, x, ok)
	case bool:
		return strconv.AppendBool(b, x)
	case json.Number:
		if !isNumber(string(x)) {
			*ok = false // encoding/json writes "" as 0 and refuses the rest
			return b
		}
		return append(b, x...)
	case []any:
		if array && x != nil {
			b = append(b, '[')
			for i, item := range x {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendPlainValue(b, item, false, ok)
			}
			return append(b, ']')
		}
	}
	*ok = false
	return b
}

// appendPlainString writes s quoted if encoding/json would write it as it
// is, or clears ok.
func appendPlainString(b []byte, s string, ok *bool) []byte {
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				*ok = false
				return b
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || r == '\u2028' || r == '\u2029' {
			*ok = false
			return b
		}
		i += size
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// isNumber reports whether s is a JSON number, as encoding/json checks a
// json.Number before writing it: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isNumber(s string) bool {
	digits := func(i int) int {
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i
	}
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	switch {
	case i < len(s) && s[i] == '0':
		i++
	case i < len(s) && s[i] >= '1' && s[i] <= '9':
		i = digits(i)
	default:
		return false
	}
	if i < len(s) && s[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return false
		}
		i = j
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return false
		}
		i = j
	}
	return i == len(s)
}
