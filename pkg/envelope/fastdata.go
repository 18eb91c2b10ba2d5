package envelope

import (
	"encoding/json"
)

// A fast path for decoding the data of Chapar's track, purchase and
// identify events: the bulk of every message, and the largest cost of
// Parse once the attributes had their own scanner (encoding/json's Decoder
// was four fifths of Parse: its buffer copy, reflection, and an interface
// value per property).
//
// It is not a second decoder with rules of its own. It takes only the
// plain form of the data, where encoding/json's result is certain: every
// key spelt exactly as its field's tag and given once, every value of its
// field's JSON kind, no null, strings of valid UTF-8, property values that
// are strings, numbers, booleans or arrays of those, and nothing after the
// value. Anything else (a key in other case, which encoding/json matches
// case-insensitively; a duplicate, which it merges; an unknown field; a
// wrong kind; a nested property; invalid text) makes it decline, and the
// data goes to encoding/json as before, which decodes or names the error.
// So what decodes, and every error message, is unchanged;
// TestFastDataAgreesWithEncodingJSON and FuzzFastData hold it to that.

// fastDecoder reads JSON with the envelope's scanner, declining (ok false)
// at the first thing outside the plain form.
type fastDecoder struct {
	scanner
	ok bool
}

// decodeDataFast decodes raw into into (a *Track, *Purchase or *Identify)
// and reports true, or reports false having decided nothing: into must
// then be decoded by encoding/json from scratch.
func decodeDataFast(raw []byte, into any) bool {
	d := fastDecoder{scanner: scanner{b: raw}, ok: true}
	d.skipSpace()
	switch x := into.(type) {
	case *Track:
		d.track(x, nil)
	case *Purchase:
		d.track(&x.Track, x)
	case *Identify:
		d.identify(x)
	default:
		return false
	}
	d.skipSpace()
	if d.ok && d.i == len(d.b) {
		return true
	}
	switch x := into.(type) { // what was decoded before declining
	case *Track:
		*x = Track{}
	case *Purchase:
		*x = Purchase{}
	case *Identify:
		*x = Identify{}
	}
	return false
}

// object walks the members of the object at the cursor, calling member
// with each key (its raw bytes, without quotes) with the cursor on its
// value; member must consume the value or decline.
func (d *fastDecoder) object(member func(key []byte)) {
	if !d.ok || d.peek() != '{' {
		d.ok = false
		return
	}
	d.i++
	d.skipSpace()
	if d.peek() == '}' {
		d.i++
		return
	}
	for d.ok {
		if d.peek() != '"' {
			d.ok = false
			return
		}
		start := d.i
		d.flags = 0
		if d.str() != nil || d.flags != 0 { // an escaped key: encoding/json's to match
			d.ok = false
			return
		}
		key := d.b[start+1 : d.i-1]
		d.skipSpace()
		if d.peek() != ':' {
			d.ok = false
			return
		}
		d.i++
		d.skipSpace()
		member(key)
		if !d.ok {
			return
		}
		d.skipSpace()
		switch d.peek() {
		case ',':
			d.i++
			d.skipSpace()
		case '}':
			d.i++
			return
		default:
			d.ok = false
			return
		}
	}
}

// string decodes the JSON string at the cursor; anything else, or text
// encoding/json would change (invalid UTF-8, a lone surrogate), declines.
func (d *fastDecoder) string() string {
	if !d.ok || d.peek() != '"' {
		d.ok = false
		return ""
	}
	start := d.i
	d.flags = 0
	if d.str() != nil || d.flags&badUTF8 != 0 {
		d.ok = false
		return ""
	}
	raw := d.b[start:d.i]
	if d.flags&hasEscape == 0 {
		if c := constantData(raw); c != "" {
			return c
		}
		return string(raw[1 : len(raw)-1])
	}
	return unquote(raw)
}

// number returns the JSON number at the cursor as written, as a Decoder
// with UseNumber does.
func (d *fastDecoder) number() json.Number {
	start := d.i
	if c := d.peek(); !d.ok || c != '-' && (c < '0' || c > '9') || d.scanner.number() != nil {
		d.ok = false
		return ""
	}
	return json.Number(d.b[start:d.i])
}

// scalar decodes a property value: a string, number or boolean, as
// encoding/json decodes them into an interface with UseNumber.
func (d *fastDecoder) scalar() any {
	switch c := d.peek(); {
	case c == '"':
		return d.string()
	case c == 't':
		if d.literal("true") == nil {
			return true
		}
	case c == 'f':
		if d.literal("false") == nil {
			return false
		}
	case c == '-' || c >= '0' && c <= '9':
		return d.number()
	}
	d.ok = false
	return nil
}

// values decodes an object of property values into a new map, as
// encoding/json decodes into a nil map[string]any.
func (d *fastDecoder) values() map[string]any {
	m := make(map[string]any)
	d.object(func(key []byte) {
		k := string(key)
		if d.peek() != '[' {
			m[k] = d.scalar()
			return
		}
		d.i++
		d.skipSpace()
		arr := make([]any, 0, 4)
		if d.peek() == ']' {
			d.i++
			m[k] = arr
			return
		}
		for d.ok {
			arr = append(arr, d.scalar())
			d.skipSpace()
			switch d.peek() {
			case ',':
				d.i++
				d.skipSpace()
			case ']':
				d.i++
				m[k] = arr
				return
			default:
				d.ok = false
			}
		}
	})
	return m
}

// strings decodes an array of strings, as encoding/json does into a nil
// []string (an empty array is an empty, not nil, slice).
func (d *fastDecoder) strings() []string {
	if !d.ok || d.peek() != '[' {
		d.ok = false
		return nil
	}
	d.i++
	d.skipSpace()
	out := []string{}
	if d.peek() == ']' {
		d.i++
		return out
	}
	for d.ok {
		out = append(out, d.string())
		d.skipSpace()
		switch d.peek() {
		case ',':
			d.i++
			d.skipSpace()
		case ']':
			d.i++
			return out
		default:
			d.ok = false
		}
	}
	return nil
}

// once declines a key given twice (encoding/json would decode both into
// the same field), by the bit of its field.
func (d *fastDecoder) once(seen *uint32, bit uint32) bool {
	if *seen&bit != 0 {
		d.ok = false
		return false
	}
	*seen |= bit
	return true
}

// track decodes a track's members, and a purchase's two more when p is
// not nil (Purchase embeds Track: its members are one object).
func (d *fastDecoder) track(t *Track, p *Purchase) {
	var seen uint32
	d.object(func(key []byte) {
		switch string(key) {
		case "name":
			if d.once(&seen, 1<<0) {
				t.Name = d.string()
			}
		case "properties":
			if d.once(&seen, 1<<1) {
				t.Properties = d.values()
			}
		case "user":
			if d.once(&seen, 1<<2) {
				d.user(&t.User)
			}
		case "revenue":
			if p != nil && d.once(&seen, 1<<3) {
				p.Revenue = d.number()
				return
			}
			d.ok = false
		case "currency":
			if p != nil && d.once(&seen, 1<<4) {
				p.Currency = d.string()
				return
			}
			d.ok = false
		default:
			d.ok = false
		}
	})
}

func (d *fastDecoder) user(u *User) {
	var seen uint32
	d.object(func(key []byte) {
		var f *string
		var bit uint32
		switch string(key) {
		case "id":
			f, bit = &u.ID, 1<<0
		case "chabokInstallationId":
			f, bit = &u.ChabokInstallationID, 1<<1
		case "metrixUserId":
			f, bit = &u.MetrixUserID, 1<<2
		case "metrixSessionId":
			f, bit = &u.MetrixSessionID, 1<<3
		case "advertisingId":
			f, bit = &u.AdvertisingID, 1<<4
		case "idfa":
			f, bit = &u.IDFA, 1<<5
		case "ip":
			f, bit = &u.IP, 1<<6
		default:
			d.ok = false
			return
		}
		if d.once(&seen, bit) {
			*f = d.string()
		}
	})
}

func (d *fastDecoder) identify(id *Identify) {
	var seen uint32
	d.object(func(key []byte) {
		switch string(key) {
		case "user":
			if d.once(&seen, 1<<0) {
				d.user(&id.User)
			}
		case "traits":
			if d.once(&seen, 1<<1) {
				d.traits(&id.Traits)
			}
		default:
			d.ok = false
		}
	})
}

func (d *fastDecoder) traits(t *Traits) {
	var seen uint32
	d.object(func(key []byte) {
		var f *string
		var bit uint32
		switch string(key) {
		case "firstName":
			f, bit = &t.FirstName, 1<<0
		case "lastName":
			f, bit = &t.LastName, 1<<1
		case "phoneNumber":
			f, bit = &t.PhoneNumber, 1<<2
		case "hashedPhoneNumber":
			f, bit = &t.HashedPhoneNumber, 1<<3
		case "email":
			f, bit = &t.Email, 1<<4
		case "hashedEmail":
			f, bit = &t.HashedEmail, 1<<5
		case "country":
			f, bit = &t.Country, 1<<6
		case "city":
			f, bit = &t.City, 1<<7
		case "region":
			f, bit = &t.Region, 1<<8
		case "locality":
			f, bit = &t.Locality, 1<<9
		case "gender":
			f, bit = &t.Gender, 1<<10
		case "birthday":
			f, bit = &t.Birthday, 1<<11
		case "channels":
			if d.once(&seen, 1<<12) {
				t.Channels = d.strings()
			}
			return
		case "customAttributes":
			if d.once(&seen, 1<<13) {
				t.CustomAttributes = d.values()
			}
			return
		default:
			d.ok = false
			return
		}
		if d.once(&seen, bit) {
			*f = d.string()
		}
	})
}

// constantData returns, without allocating, string values common in data
// (the gender and channel enumerations), given their JSON text; else "".
func constantData(raw []byte) string {
	switch string(raw) {
	case `"Male"`:
		return "Male"
	case `"Female"`:
		return "Female"
	case `"Other"`:
		return "Other"
	case `"SMS"`:
		return "SMS"
	case `"Push"`:
		return "Push"
	case `"Email"`:
		return "Email"
	}
	return ""
}
