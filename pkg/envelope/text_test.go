package envelope_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/nats-io/nats.go"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

func TestClip(t *testing.T) {
	tests := []struct {
		name string
		in   string
		n    int
		want string
	}{
		{"fits", "order_paid", 64, "order_paid"},
		{"exact", "abc", 3, "abc"},
		{"ascii cut", "abcdef", 4, "abcd"},
		{"zero", "abc", 0, ""},
		{"negative", "abc", -1, ""},
		{"cut before a split rune", "ab\u0633\u0644", 3, "ab"}, // سل: 2 bytes each
		{"cut after a whole rune", "ab\u0633\u0644", 4, "ab\u0633"},
		{"invalid byte replaced", "a\xffb", 16, "a\uFFFDb"},
		{"replacement counted in bytes", "a\xffb", 3, "a"},
		{"replacement fits", "a\xffb", 4, "a\uFFFD"},
		{"truncated rune replaced", "id-\xd8", 16, "id-\uFFFD"},
		{"NUL is valid UTF-8 and kept", "a\x00b", 16, "a\x00b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := envelope.Clip(tt.in, tt.n)
			if got != tt.want {
				t.Errorf("Clip(%q, %d) = %q, want %q", tt.in, tt.n, got, tt.want)
			}
			if !utf8.ValidString(got) || len(got) > max(tt.n, 0) {
				t.Errorf("Clip(%q, %d) = %q: not valid UTF-8 or too long", tt.in, tt.n, got)
			}
		})
	}
}

func TestProbeID(t *testing.T) {
	long := strings.Repeat("x", 1000)
	tests := []struct {
		name string
		h    nats.Header
		data string
		want string
	}{
		{"structured", nil, `{"id":"e-1","type":"nope"}`, "e-1"},
		{"binary header wins", nats.Header{"ce-id": {"h-1"}}, `{"id":"b-1"}`, "h-1"},
		{"binary without ce-id falls back to body", nats.Header{"ce-source": {"x"}}, `{"id":"b-1"}`, "b-1"},
		{"id not a string", nil, `{"id":42}`, ""},
		{"not JSON", nil, `order_paid`, ""},
		{"no id", nil, `{"source":"x"}`, ""},
		{"invalid UTF-8 header replaced", nats.Header{"ce-id": {"a\xffb"}}, ``, "a\uFFFDb"},
		{"long header clipped", nats.Header{"ce-id": {long}}, ``, long[:envelope.MaxIDBytes]},
		{"long body id clipped", nil, `{"id":"` + long + `"}`, long[:envelope.MaxIDBytes]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := envelope.ProbeID(tt.h, []byte(tt.data)); got != tt.want {
				t.Errorf("ProbeID = %q, want %q", got, tt.want)
			}
		})
	}
	if got := envelope.ProbeID(nil, nil); got != "" {
		t.Errorf("ProbeID(nil, nil) = %q", got)
	}
}
