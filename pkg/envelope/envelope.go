// Package envelope is Chapar's public contract: the CloudEvents 1.0 envelope
// producers publish, the data each Chapar event type carries, and the rules
// that make an envelope deliverable.
//
// Producers in other languages validate against schema.json (embedded here as
// Schema); Go producers build envelopes with New and the typed data structs.
package envelope

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// SpecVersion is the only CloudEvents version Chapar accepts.
const SpecVersion = "1.0"

// Content types of structured-mode envelopes.
const (
	ContentTypeCloudEvents = "application/cloudevents+json"
	ContentTypeJSON        = "application/json"
)

// DefaultMaxBytes is the default largest envelope Chapar accepts (1 MiB).
const DefaultMaxBytes = 1 << 20

// Chapar's event types.
const (
	TypeTrack    = "chapar.track"
	TypePurchase = "chapar.purchase"
	TypeIdentify = "chapar.identify"
	TypeNotify   = "chapar.notify"
)

// Types lists every event type Chapar understands.
func Types() []string { return []string{TypeTrack, TypePurchase, TypeIdentify, TypeNotify} }

// IsChaparType reports whether t is one of Chapar's own types, whose data
// has a fixed shape (Track, Purchase, Identify, Notify) checked strictly.
func IsChaparType(t string) bool {
	switch t {
	case TypeTrack, TypePurchase, TypeIdentify, TypeNotify:
		return true
	}
	return false
}

// Envelope is a CloudEvents 1.0 event in JSON structured mode.
//
// ID is the idempotency key end to end: JetStream de-duplicates publishes on
// it and vendors that de-duplicate receive it as their message id.
type Envelope struct {
	SpecVersion     string     `json:"specversion"`
	ID              string     `json:"id"`
	Source          string     `json:"source"`
	Type            string     `json:"type"`
	Time            *time.Time `json:"time,omitempty"`
	Subject         string     `json:"subject,omitempty"`
	DataContentType string     `json:"datacontenttype,omitempty"`
	DataSchema      string     `json:"dataschema,omitempty"`
	// Destinations is the CloudEvents extension that routes explicitly: a
	// comma-separated list of sink names that overrides the routing table.
	Destinations string          `json:"destinations,omitempty"`
	Data         json.RawMessage `json:"data,omitempty"`
	// Extensions holds the CloudEvents extension attributes Chapar does not
	// interpret, such as traceparent and tracestate, by name, so that they
	// pass through as CloudEvents asks of intermediaries. Values are in their
	// canonical string form (a JSON true becomes "true"), as binary mode
	// carries them. Marshal writes them; encoding/json on an Envelope does not.
	Extensions map[string]string `json:"-"`
}

// Traceparent is the W3C trace context the producer sent in the
// traceparent extension (CloudEvents distributed tracing), or "".
func (e *Envelope) Traceparent() string { return e.Extensions["traceparent"] }

// Tracestate is the W3C tracestate that accompanies Traceparent, or "".
func (e *Envelope) Tracestate() string { return e.Extensions["tracestate"] }

// User carries every identity a vendor may need.
type User struct {
	ID                   string `json:"id,omitempty"`
	ChabokInstallationID string `json:"chabokInstallationId,omitempty"`
	MetrixUserID         string `json:"metrixUserId,omitempty"`
	MetrixSessionID      string `json:"metrixSessionId,omitempty"`
	AdvertisingID        string `json:"advertisingId,omitempty"`
	IDFA                 string `json:"idfa,omitempty"`
	IP                   string `json:"ip,omitempty"`
}

// Track is the data of a chapar.track event. Property values are strings,
// booleans, numbers (json.Number, to keep their precision) or arrays of them;
// times travel as RFC 3339 strings.
type Track struct {
	Name       string         `json:"name"`
	Properties map[string]any `json:"properties,omitempty"`
	User       User           `json:"user"`
}

// Purchase is the data of a chapar.purchase event: a Track with revenue.
type Purchase struct {
	Track
	Revenue  json.Number `json:"revenue"`
	Currency string      `json:"currency"`
}

// Traits describe a user in a chapar.identify event.
type Traits struct {
	FirstName         string         `json:"firstName,omitempty"`
	LastName          string         `json:"lastName,omitempty"`
	PhoneNumber       string         `json:"phoneNumber,omitempty"`
	HashedPhoneNumber string         `json:"hashedPhoneNumber,omitempty"`
	Email             string         `json:"email,omitempty"`
	HashedEmail       string         `json:"hashedEmail,omitempty"`
	Country           string         `json:"country,omitempty"`
	City              string         `json:"city,omitempty"`
	Region            string         `json:"region,omitempty"`
	Locality          string         `json:"locality,omitempty"`
	Gender            string         `json:"gender,omitempty"`   // Male | Female | Other
	Birthday          string         `json:"birthday,omitempty"` // YYYY-MM-DD or RFC 3339
	Channels          []string       `json:"channels,omitempty"` // SMS | Push | Email
	CustomAttributes  map[string]any `json:"customAttributes,omitempty"`
}

// Identify is the data of a chapar.identify event.
type Identify struct {
	User   User   `json:"user"`
	Traits Traits `json:"traits"`
}

// Target is whom a notification is for.
type Target struct {
	Type string `json:"type"` // USER | POST
	ID   string `json:"id"`
}

// Button is an action offered with a notification.
type Button struct {
	Title string `json:"title"`
	URL   string `json:"url,omitempty"`
}

// Notify is the data of a chapar.notify event.
type Notify struct {
	Message string   `json:"message"`
	Target  Target   `json:"target"`
	Buttons []Button `json:"buttons,omitempty"`
}

// Event is an envelope whose data has been decoded into its type's struct.
// Exactly one of the data pointers is set, matching Envelope.Type.
type Event struct {
	Envelope
	Track    *Track
	Purchase *Purchase
	Identify *Identify
	Notify   *Notify
}

// Name is the event's name for routing: the track or purchase name, and the
// type itself for identify and notify, which have none.
func (e *Event) Name() string {
	switch {
	case e.Track != nil:
		return e.Track.Name
	case e.Purchase != nil:
		return e.Purchase.Name
	}
	return ""
}

// EventUser is the user the event is about, if its type has one.
func (e *Event) EventUser() User {
	switch {
	case e.Track != nil:
		return e.Track.User
	case e.Purchase != nil:
		return e.Purchase.User
	case e.Identify != nil:
		return e.Identify.User
	}
	return User{}
}

// OccurredAt is the event's time, or received when the producer gave none.
func (e *Event) OccurredAt(received time.Time) time.Time {
	if e.Time != nil {
		return *e.Time
	}
	return received
}

// DestinationList splits the destinations extension into sink names.
func (e *Envelope) DestinationList() []string {
	if strings.TrimSpace(e.Destinations) == "" {
		return nil
	}
	var out []string
	for _, d := range strings.Split(e.Destinations, ",") {
		if d = strings.TrimSpace(d); d != "" {
			out = append(out, d)
		}
	}
	return out
}

// Option adjusts an envelope built by New.
type Option func(*Envelope)

// WithID sets the envelope id; by default New generates a UUIDv7.
func WithID(id string) Option { return func(e *Envelope) { e.ID = id } }

// WithTime sets when the event happened; by default Chapar uses the time it
// received the event.
func WithTime(t time.Time) Option { return func(e *Envelope) { t := t.UTC(); e.Time = &t } }

// WithSubject sets the CloudEvents subject, conventionally the user's id.
func WithSubject(s string) Option { return func(e *Envelope) { e.Subject = s } }

// WithExtension sets a CloudEvents extension attribute, such as traceparent.
func WithExtension(name, value string) Option {
	return func(e *Envelope) {
		if e.Extensions == nil {
			e.Extensions = make(map[string]string)
		}
		e.Extensions[name] = value
	}
}

// WithDestinations routes the event to exactly these sinks, overriding the
// routing table.
func WithDestinations(sinks ...string) Option {
	return func(e *Envelope) { e.Destinations = strings.Join(sinks, ",") }
}

// New builds a valid envelope of the given type around data, which must be
// one of Track, Purchase, Identify or Notify (or a pointer to one).
func New(eventType, source string, data any, opts ...Option) (*Envelope, error) {
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("envelope: encode data: %w", err)
	}
	id, err := uuid.NewV7()
	if err != nil {
		return nil, fmt.Errorf("envelope: generate id: %w", err)
	}
	env := &Envelope{
		SpecVersion:     SpecVersion,
		ID:              id.String(),
		Source:          source,
		Type:            eventType,
		DataContentType: ContentTypeJSON,
		Data:            raw,
	}
	for _, opt := range opts {
		opt(env)
	}
	if _, err := env.Decode(); err != nil {
		return nil, err
	}
	return env, nil
}

// Marshal encodes the envelope in JSON structured mode.
func (e *Envelope) Marshal() ([]byte, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("envelope: encode: %w", err)
	}
	if len(e.Extensions) == 0 {
		return b, nil
	}
	names := slices.Sorted(maps.Keys(e.Extensions))
	b = b[:len(b)-1] // }
	for _, name := range names {
		if !isExtensionName(name) || isAttribute(name) {
			return nil, fmt.Errorf("envelope: encode: %q is not an extension attribute name", name)
		}
		v, err := json.Marshal(e.Extensions[name])
		if err != nil {
			return nil, fmt.Errorf("envelope: encode extension %s: %w", name, err)
		}
		b = append(b, ',', '"')
		b = append(b, name...)
		b = append(b, '"', ':')
		b = append(b, v...)
	}
	return append(b, '}'), nil
}

// Parse decodes and validates a structured-mode envelope. Any error it
// returns is a *ValidationError listing every violation found.
func Parse(raw []byte, maxBytes int) (*Event, error) {
	if err := checkSize(len(raw), maxBytes); err != nil {
		return nil, err
	}
	ev := &Event{}
	env := &ev.Envelope
	var v violations
	var seen uint16 // attributes met so far, by bit
	var dataFlags textFlags
	s := scanner{b: raw}
	s.skipSpace()
	if s.peek() != '{' {
		if err := s.value(); err != nil {
			return nil, notJSON(err)
		}
		return nil, newValidationError("", violations{{Problem: "not a JSON object"}})
	}
	s.i++
	s.skipSpace()
	for s.peek() != '}' {
		if s.peek() != '"' {
			return nil, notJSON(s.unexpected())
		}
		start := s.i
		s.flags = 0
		if err := s.str(); err != nil {
			return nil, notJSON(err)
		}
		key, keyFlags := raw[start:s.i], s.flags
		s.skipSpace()
		if s.peek() != ':' {
			return nil, notJSON(s.unexpected())
		}
		s.i++
		s.skipSpace()
		start = s.i
		s.flags = 0
		if err := s.value(); err != nil {
			return nil, notJSON(err)
		}
		val, valFlags := raw[start:s.i], s.flags
		s.skipSpace()
		switch s.peek() {
		case ',':
			s.i++
			s.skipSpace()
			if s.peek() == '}' {
				return nil, notJSON(s.unexpected())
			}
		case '}':
		default:
			return nil, notJSON(s.unexpected())
		}

		var name string
		var bit uint16
		if keyFlags == 0 {
			name, bit = attribute(key[1 : len(key)-1])
		} else {
			name, bit = attribute([]byte(unquote(key)))
		}
		if bit == 0 {
			readExtension(env, key, keyFlags, val, &v)
			continue
		}
		if seen&bit != 0 {
			v.add(name, "appears more than once")
			continue
		}
		seen |= bit
		if string(val) == "null" {
			continue // CloudEvents: a null attribute is an absent one
		}
		if name == "data" {
			env.Data, dataFlags = bytes.Clone(val), valFlags
			continue
		}
		if val[0] != '"' {
			v.add(name, "must be a string, got "+jsonKindOf(val))
			continue
		}
		str := constant(val)
		if str == "" {
			str = unquote(val)
		}
		switch name {
		case "specversion":
			env.SpecVersion = str
		case "id":
			env.ID = str
		case "source":
			env.Source = str
		case "type":
			env.Type = str
		case "subject":
			env.Subject = str
		case "datacontenttype":
			env.DataContentType = str
		case "dataschema":
			env.DataSchema = str
		case "destinations":
			env.Destinations = str
		case "time":
			t, err := time.Parse(time.RFC3339Nano, str)
			if err != nil {
				v.add("time", "must be an RFC 3339 timestamp, e.g. 2026-01-02T15:04:05Z")
			} else {
				env.Time = &t
			}
		}
	}
	s.i++ // }
	s.skipSpace()
	if s.i != len(raw) {
		return nil, notJSON(s.fail("data after the top-level object"))
	}
	v = append(v, ev.validate(&dataFlags)...)
	if len(v) > 0 {
		return nil, newValidationError(env.ID, v)
	}
	return ev, nil
}

// attribute identifies a key Chapar reads: its name and a bit to catch one
// given twice. Converting key in the switch does not allocate.
func attribute(key []byte) (string, uint16) {
	switch string(key) {
	case "specversion":
		return "specversion", 1 << 0
	case "id":
		return "id", 1 << 1
	case "source":
		return "source", 1 << 2
	case "type":
		return "type", 1 << 3
	case "time":
		return "time", 1 << 4
	case "subject":
		return "subject", 1 << 5
	case "datacontenttype":
		return "datacontenttype", 1 << 6
	case "dataschema":
		return "dataschema", 1 << 7
	case "destinations":
		return "destinations", 1 << 8
	case "data":
		return "data", 1 << 9
	}
	return "", 0
}

// isAttribute reports whether name is an attribute Chapar reads itself.
func isAttribute(name string) bool {
	_, bit := attribute([]byte(name))
	return bit != 0
}

// readExtension records the member key: val of a structured envelope that is
// not an attribute Chapar reads: a CloudEvents extension attribute.
func readExtension(env *Envelope, key []byte, keyFlags textFlags, val []byte, v *violations) {
	name := unquote(key)
	switch {
	case name == "data_base64":
		v.add(name, "binary data is not supported; send data as JSON")
		return
	case keyFlags&(badUTF8|hasNUL) != 0 || !isExtensionName(name):
		v.add(Clip(name, 64), extensionNameProblem)
		return
	case len(env.Extensions) == MaxExtensions:
		v.add(name, fmt.Sprintf("is one extension too many; the maximum is %d", MaxExtensions))
		return
	}
	if _, dup := env.Extensions[name]; dup {
		v.add(name, "appears more than once")
		return
	}
	var value string
	switch val[0] {
	case 'n':
		return // null: absent
	case '"':
		value = unquote(val)
	case 't', 'f':
		value = string(val)
	case '{', '[':
		v.add(name, "must be a string, boolean or integer, got "+jsonKindOf(val))
		return
	default:
		n, err := strconv.ParseInt(string(val), 10, 32)
		if err != nil {
			v.add(name, "must be a string, boolean or integer (32-bit), got "+quote(string(val)))
			return
		}
		value = strconv.FormatInt(n, 10)
	}
	if env.Extensions == nil {
		env.Extensions = make(map[string]string)
	}
	env.Extensions[name] = value
}

// constant returns, without allocating, the common attribute values that
// are constants, given their JSON text; else "".
func constant(val []byte) string {
	switch string(val) {
	case `"1.0"`:
		return SpecVersion
	case `"chapar.track"`:
		return TypeTrack
	case `"chapar.purchase"`:
		return TypePurchase
	case `"chapar.identify"`:
		return TypeIdentify
	case `"chapar.notify"`:
		return TypeNotify
	case `"application/json"`:
		return ContentTypeJSON
	}
	return ""
}

func notJSON(err error) error {
	return newValidationError("", violations{{Problem: "not a JSON object: " + err.Error()}})
}

// jsonKindOf names the kind of a JSON value, for an error message.
func jsonKindOf(raw []byte) string {
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// checkSize rejects an envelope over maxBytes (0: no limit).
func checkSize(n, maxBytes int) error {
	if maxBytes > 0 && n > maxBytes {
		return &ValidationError{Violations: []Violation{{
			Problem: fmt.Sprintf("envelope is %d bytes; the maximum is %d (max_envelope_bytes)", n, maxBytes),
		}}}
	}
	return nil
}

// Decode validates the envelope and decodes its data into the struct of its
// type. Any error it returns is a *ValidationError.
func (e *Envelope) Decode() (*Event, error) {
	ev := &Event{Envelope: *e}
	if v := ev.validate(nil); len(v) > 0 {
		return nil, newValidationError(e.ID, v)
	}
	return ev, nil
}

// validate checks the attributes and decodes the data into its type's
// struct. dataFlags, if known, describe the strings in the data.
func (ev *Event) validate(dataFlags *textFlags) violations {
	e := &ev.Envelope
	var v violations
	if v.text("specversion", e.SpecVersion, MaxAttributeBytes) && e.SpecVersion != SpecVersion {
		if e.SpecVersion == "" {
			v.add("specversion", "is required and must be \"1.0\"")
		} else {
			v.add("specversion", fmt.Sprintf("is %s; only \"1.0\" is supported", quote(e.SpecVersion)))
		}
	}
	if e.ID == "" {
		v.add("id", "is required (a unique id; it is the idempotency key)")
	} else {
		v.text("id", e.ID, MaxIDBytes)
	}
	if e.Source == "" {
		v.add("source", "is required (a URI-reference naming the producer)")
	} else {
		v.text("source", e.Source, MaxAttributeBytes)
	}
	v.text("subject", e.Subject, MaxAttributeBytes)
	v.text("dataschema", e.DataSchema, MaxAttributeBytes)
	if ct := e.DataContentType; v.text("datacontenttype", ct, MaxAttributeBytes) && ct != "" && !strings.HasPrefix(ct, ContentTypeJSON) {
		v.add("datacontenttype", fmt.Sprintf("is %s; data must be %s", quote(ct), ContentTypeJSON))
	}
	if v.text("destinations", e.Destinations, MaxDestinationsBytes) {
		validateDestinations(e.Destinations, &v)
	}
	validateExtensions(e.Extensions, &v)
	if !v.text("type", e.Type, MaxAttributeBytes) {
		return v
	}
	var into any
	switch e.Type {
	case "":
		v.add("type", "is required: one of "+strings.Join(Types(), ", ")+", or a type of your own such as com.example.order.shipped")
		return v
	case TypeTrack:
		ev.Track = &Track{}
		into = ev.Track
	case TypePurchase:
		ev.Purchase = &Purchase{}
		into = ev.Purchase
	case TypeIdentify:
		ev.Identify = &Identify{}
		into = ev.Identify
	case TypeNotify:
		ev.Notify = &Notify{}
		into = ev.Notify
	default:
		if err := CheckType(e.Type); err != nil {
			v.add("type", quote(e.Type)+" is not an event type: "+err.Error())
			return v
		}
		// A producer's own type: any JSON data, or none, passed on as written.
		customData(e.Data, dataFlags, &v)
		return v
	}
	before := len(v)
	dataText(e.Data, dataFlags, &v)
	decodeData(e.Data, into, &v)
	if len(v) > before {
		return v
	}
	switch {
	case ev.Track != nil:
		validateTrack(ev.Track, &v)
	case ev.Purchase != nil:
		validateTrack(&ev.Purchase.Track, &v)
		validatePurchase(ev.Purchase, &v)
	case ev.Identify != nil:
		validateIdentify(ev.Identify, &v)
	case ev.Notify != nil:
		validateNotify(ev.Notify, &v)
	}
	return v
}

// dataText names every string in data that is not valid UTF-8 or holds a
// NUL; encoding/json would pass them on as U+FFFD and NUL.
func dataText(data []byte, flags *textFlags, v *violations) {
	if flags == nil {
		s := scanner{b: data}
		s.skipSpace()
		if s.value() != nil {
			return // decodeData reports the syntax error
		}
		flags = &s.flags
	}
	if *flags&(badUTF8|hasNUL) == 0 {
		return
	}
	s := scanner{b: data}
	s.skipSpace()
	s.badStrings("data", v)
}

// customData checks the data of a producer's own type: absent, or any JSON
// value whose strings are valid UTF-8 without NUL, as every attribute's are
// (Parse has already found it JSON; Decode and binary mode have not).
func customData(data []byte, flags *textFlags, v *violations) {
	if len(bytes.TrimSpace(data)) == 0 {
		return
	}
	if flags == nil {
		s := scanner{b: data}
		s.skipSpace()
		err := s.value()
		if err == nil {
			s.skipSpace()
			if s.i != len(data) {
				err = s.fail("data after the JSON value")
			}
		}
		if err != nil {
			v.add("data", "is not valid JSON: "+err.Error())
			return
		}
		flags = &s.flags
	}
	dataText(data, flags, v)
}

// decodeData decodes data strictly: numbers stay json.Number and unknown
// fields are violations, so a typo in a producer is caught, not ignored.
func decodeData(raw json.RawMessage, into any, v *violations) {
	if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		v.add("data", "is required for this type")
		return
	}
	if decodeDataFast(raw, into) {
		return
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(into); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr):
			v.add("data."+typeErr.Field, fmt.Sprintf("must be %s, got %s", jsonKind(typeErr.Type.Kind().String()), typeErr.Value))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
			v.add("data", "has unknown field "+quote(field)+" (check its spelling against docs/envelope.md)")
		default:
			v.add("data", "is not valid JSON: "+err.Error())
		}
	}
}

func jsonKind(goKind string) string {
	switch goKind {
	case "string":
		return "a string"
	case "map", "struct":
		return "an object"
	case "slice":
		return "an array"
	case "bool":
		return "a boolean"
	default:
		return "a number"
	}
}

func validateTrack(t *Track, v *violations) {
	if strings.TrimSpace(t.Name) == "" {
		v.add("data.name", "is required (the event's name, e.g. order_paid)")
	}
	validateValues(t.Properties, "data.properties", v)
	validateUser(t.User, "data.user", v)
}

func validatePurchase(p *Purchase, v *violations) {
	if p.Revenue == "" {
		v.add("data.revenue", "is required (a number)")
	} else if f, err := p.Revenue.Float64(); err != nil || f < 0 {
		v.add("data.revenue", "must be a non-negative number")
	}
	if !isCurrencyCode(p.Currency) {
		v.add("data.currency", "is required: an ISO 4217 code such as IRR, USD or EUR")
	}
}

func isCurrencyCode(s string) bool {
	if len(s) != 3 {
		return false
	}
	for _, r := range s {
		if r < 'A' || r > 'Z' {
			return false
		}
	}
	return true
}

func validateIdentify(id *Identify, v *violations) {
	validateUser(id.User, "data.user", v)
	if id.User.ID == "" && id.User.MetrixUserID == "" && id.User.ChabokInstallationID == "" {
		v.add("data.user", "needs at least one identity (id, metrixUserId or chabokInstallationId)")
	}
	switch id.Traits.Gender {
	case "", "Male", "Female", "Other":
	default:
		v.add("data.traits.gender", fmt.Sprintf("is %s; one of Male, Female, Other", quote(id.Traits.Gender)))
	}
	if b := id.Traits.Birthday; b != "" {
		if _, err := ParseDate(b); err != nil {
			v.add("data.traits.birthday", "must be a date (YYYY-MM-DD) or an RFC 3339 timestamp")
		}
	}
	for i, c := range id.Traits.Channels {
		switch c {
		case "SMS", "Push", "Email":
		default:
			v.add(fmt.Sprintf("data.traits.channels[%d]", i), fmt.Sprintf("is %s; one of SMS, Push, Email", quote(c)))
		}
	}
	validateValues(id.Traits.CustomAttributes, "data.traits.customAttributes", v)
}

// ParseDate reads a birthday: a calendar date or an RFC 3339 timestamp.
func ParseDate(s string) (time.Time, error) {
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("envelope: %q is neither YYYY-MM-DD nor RFC 3339: %w", s, err)
	}
	return t, nil
}

func validateNotify(n *Notify, v *violations) {
	if strings.TrimSpace(n.Message) == "" {
		v.add("data.message", "is required")
	}
	switch n.Target.Type {
	case "USER", "POST":
	case "":
		v.add("data.target.type", "is required: USER or POST")
	default:
		v.add("data.target.type", fmt.Sprintf("is %s; USER or POST", quote(n.Target.Type)))
	}
	if n.Target.ID == "" {
		v.add("data.target.id", "is required (the user's id or the post token)")
	}
	for i, b := range n.Buttons {
		if b.Title == "" {
			v.add(fmt.Sprintf("data.buttons[%d].title", i), "is required")
		}
	}
}

func validateUser(u User, at string, v *violations) {
	if u.ID == "" && u.ChabokInstallationID == "" && u.MetrixUserID == "" && u.AdvertisingID == "" && u.IDFA == "" {
		v.add(at, "needs at least one identity: id, chabokInstallationId, metrixUserId, advertisingId or idfa")
	}
}

// validateValues checks that properties hold only values every vendor can
// carry: strings, booleans, numbers and arrays of those.
func validateValues(m map[string]any, at string, v *violations) {
	for k, val := range m {
		if k == "" {
			v.add(at, "has an empty key")
			continue
		}
		switch x := val.(type) {
		case string, bool, json.Number:
		case []any:
			for i, item := range x {
				switch item.(type) {
				case string, bool, json.Number:
				default:
					v.add(fmt.Sprintf("%s.%s[%d]", at, k, i), "arrays may hold only strings, booleans and numbers")
				}
			}
		case nil:
			v.add(at+"."+k, "is null; omit the key instead")
		default:
			v.add(at+"."+k, "must be a string, boolean, number or array of those; flatten nested objects")
		}
	}
}
