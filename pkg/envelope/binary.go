package envelope

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
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
	ev := &Event{Envelope: Envelope{
		SpecVersion:     h.Get(HeaderPrefix + "specversion"),
		ID:              h.Get(HeaderPrefix + "id"),
		Source:          h.Get(HeaderPrefix + "source"),
		Type:            h.Get(HeaderPrefix + "type"),
		Subject:         h.Get(HeaderPrefix + "subject"),
		DataSchema:      h.Get(HeaderPrefix + "dataschema"),
		Destinations:    h.Get(HeaderPrefix + "destinations"),
		DataContentType: cmp.Or(h.Get("Content-Type"), h.Get(HeaderPrefix+"datacontenttype")),
		Data:            body,
	}}
	env := &ev.Envelope
	if ct := strings.ToLower(env.DataContentType); strings.HasPrefix(ct, ContentTypeCloudEvents) {
		// A structured body with a stray ce- header: trust the body.
		return Parse(body, maxBytes)
	}
	var v violations
	if ts := h.Get(HeaderPrefix + "time"); ts != "" {
		t, err := time.Parse(time.RFC3339Nano, ts)
		if err != nil {
			v.add("time", "must be an RFC 3339 timestamp, e.g. 2026-01-02T15:04:05Z")
		} else {
			env.Time = &t
		}
	}
	if nh, ok := h.(nats.Header); ok {
		readHeaderExtensions(nh, env, &v)
	}
	if v = append(v, ev.validate(nil)...); len(v) > 0 {
		return nil, newValidationError(env.ID, v)
	}
	return ev, nil
}

// readHeaderExtensions reads the ce- headers that are not attributes Chapar
// reads itself into env.Extensions; a header given twice is a violation.
// Only a nats.Header can list its keys, so only it carries extensions.
func readHeaderExtensions(h nats.Header, env *Envelope, v *violations) {
	before := len(*v)
	defer func() { // map order is random; the error's should not be
		slices.SortFunc((*v)[before:], func(a, b Violation) int { return strings.Compare(a.Field, b.Field) })
	}()
	for key, values := range h {
		name, ok := strings.CutPrefix(key, HeaderPrefix)
		if !ok {
			continue
		}
		if len(values) > 1 {
			v.add(Clip(name, 64), fmt.Sprintf("is given in %d %s headers; at most one", len(values), HeaderPrefix+Clip(name, 64)))
			continue
		}
		if isAttribute(name) || name == "datacontenttype" {
			continue // read above; datacontenttype travels as Content-Type
		}
		if !isExtensionName(name) {
			v.add(Clip(name, 64), extensionNameProblem)
			continue
		}
		if env.Extensions == nil {
			env.Extensions = make(map[string]string)
		}
		if len(values) == 1 {
			env.Extensions[name] = values[0]
		}
	}
}
