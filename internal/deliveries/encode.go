package deliveries

import (
	"strconv"
	"time"
	"unicode/utf8"
)

// AppendJSON appends r as encoding/json would write it (the same fields,
// names and omissions; json.Unmarshal reads it back equal), without
// reflection or allocation: a record is written for every delivery, on
// the hot path (encoding/json cost 770 bytes and a fifth of the record's
// CPU per delivery in BenchmarkBatch's profile).
func (r *Record) AppendJSON(b []byte) []byte {
	b = append(b, `{"id":`...)
	b = appendString(b, r.EventID)
	b = appendStringField(b, "type", r.Type)
	b = appendStringField(b, "subject", r.Subject)
	b = appendStringField(b, "name", r.Name)
	b = append(b, `,"sink":`...)
	b = appendString(b, r.Sink)
	b = append(b, `,"state":`...)
	b = appendString(b, string(r.State))
	b = append(b, `,"at":`...)
	b = appendTime(b, r.At)
	b = append(b, `,"attempts":`...)
	b = strconv.AppendInt(b, int64(r.Attempts), 10)
	if r.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(r.Status), 10)
	}
	b = appendStringField(b, "code", r.Code)
	b = appendStringField(b, "error", r.Error)
	b = appendStringField(b, "reason", r.Reason)
	if r.DeadLetter != 0 {
		b = append(b, `,"dead_letter":`...)
		b = strconv.AppendUint(b, r.DeadLetter, 10)
	}
	if r.Latency != 0 {
		b = append(b, `,"latency_ns":`...)
		b = strconv.AppendInt(b, int64(r.Latency), 10)
	}
	if !r.NextAttempt.IsZero() {
		b = append(b, `,"next_attempt":`...)
		b = appendTime(b, r.NextAttempt)
	}
	b = appendStringField(b, "stream", r.Stream)
	if r.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, r.Seq, 10)
	}
	if r.Origin != 0 {
		b = append(b, `,"origin":`...)
		b = strconv.AppendUint(b, r.Origin, 10)
	}
	if r.Replays != 0 {
		b = append(b, `,"replays":`...)
		b = strconv.AppendInt(b, int64(r.Replays), 10)
	}
	return append(b, '}')
}

// appendStringField appends ,"name":"s" unless s is empty (omitempty).
func appendStringField(b []byte, name, s string) []byte {
	if s == "" {
		return b
	}
	b = append(b, ',', '"')
	b = append(b, name...)
	b = append(b, '"', ':')
	return appendString(b, s)
}

// appendTime appends t as time.Time's MarshalJSON does (RFC 3339 with
// nanoseconds).
func appendTime(b []byte, t time.Time) []byte {
	b = append(b, '"')
	b = t.AppendFormat(b, time.RFC3339Nano)
	return append(b, '"')
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string: quotes, backslashes and control
// characters escaped, invalid UTF-8 replaced by U+FFFD, as encoding/json
// does (it also escapes <, > and & for HTML, which JSON does not need).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i++
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON; left as they are.
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
