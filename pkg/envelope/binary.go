package envelope

import (
	"strings"
	"time"
)

// HeaderPrefix marks CloudEvents attributes carried as NATS headers in binary
// mode, as the CloudEvents NATS protocol binding describes.
const HeaderPrefix = "ce-"

// Headers is the part of a message's headers Parse needs; nats.Header
// satisfies it.
type Headers interface {
	Get(key string) string
}

// IsBinary reports whether a message carries its attributes in headers.
func IsBinary(h Headers) bool {
	return h != nil && h.Get(HeaderPrefix+"specversion") != ""
}

// ParseMessage decodes an envelope from a NATS message in either mode:
// binary (attributes in ce-* headers, the body is data) or structured (the
// body is the whole envelope).
func ParseMessage(h Headers, body []byte, maxBytes int) (*Event, error) {
	if !IsBinary(h) {
		return Parse(body, maxBytes)
	}
	if err := checkSize(len(body), maxBytes); err != nil {
		return nil, err
	}
	env := Envelope{
		SpecVersion:     h.Get(HeaderPrefix + "specversion"),
		ID:              h.Get(HeaderPrefix + "id"),
		Source:          h.Get(HeaderPrefix + "source"),
		Type:            h.Get(HeaderPrefix + "type"),
		Subject:         h.Get(HeaderPrefix + "subject"),
		DataSchema:      h.Get(HeaderPrefix + "dataschema"),
		Destinations:    h.Get(HeaderPrefix + "destinations"),
		DataContentType: h.Get("Content-Type"),
		Data:            body,
	}
	if ts := h.Get(HeaderPrefix + "time"); ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			return nil, &ValidationError{ID: env.ID, Violations: []Violation{{Field: "time", Problem: "must be an RFC 3339 timestamp"}}}
		}
		env.Time = &t
	}
	if ct := strings.ToLower(env.DataContentType); strings.HasPrefix(ct, ContentTypeCloudEvents) {
		// A structured body with a stray ce- header: trust the body.
		return Parse(body, maxBytes)
	}
	return env.Decode()
}
