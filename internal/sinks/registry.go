package sinks

// Which vendors exist, and how a sink is built from its config. A vendor
// is one file in this package that registers itself from init, the way a
// database/sql driver does:
//
//	func init() {
//		Register(Spec[mySettings]{
//			Name:     "my-vendor",
//			Summary:  "My vendor's events API",
//			Defaults: func() mySettings { return mySettings{Unit: "ms"} },
//			Validate: func(s *mySettings, at string) error { return required(at, "api_key", s.APIKey.Value()) },
//			New:      newMyVendor,
//		})
//	}
//
// Nothing else in Chapar names a vendor: config validation, the docs check,
// the demo and the tests find vendors here.
//
// Why a package-level registry: a vendor file (or a test's) adds itself
// without any other file being edited, which needs init and therefore a
// package-level value. It is written only while the program initialises
// (Register panics once the registry has been read), and callers only get
// copies (Vendors, Lookup), so no caller can change which vendors exist at
// run time; that is the same contract database/sql's driver registry has.

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/config"
)

// Spec is what a vendor file registers, with its settings type S (a struct
// whose yaml tags are the keys of the sink's settings).
type Spec[S any] struct {
	// Name is the value of sinks[i].vendor.
	Name string
	// Summary is one line for listings and the docs table.
	Summary string
	// Defaults are the settings before a sink's own keys are decoded over
	// them; nil is the zero S.
	Defaults func() S
	// Validate checks decoded settings, naming each bad key under at
	// (sinks[0].settings); nil accepts any.
	Validate func(s *S, at string) error
	// New builds the sink from its config and valid settings: its request
	// mapping, auth and error table live in the vendor's file.
	New func(cfg config.Sink, s S) (Sink, error)
	// Batches says its sinks take several events per request (implement
	// BatchSink), so sinks[i].batch may be set. A sink that does
	// otherwise than this says fails to build.
	Batches bool
	// Types are the event types the vendor has a call for; nil is any
	// type (the webhook). Its sinks dead-letter another type routed to
	// them as unsupported_event, and config check refuses a route that
	// names one for them.
	Types []string
}

// Vendor is one registered vendor, its settings type erased.
type Vendor struct {
	Name    string
	Summary string
	// Batches: its sinks take several events per request (Spec.Batches).
	Batches bool
	// Settings are the keys of the vendor's settings, in declaration order.
	Settings []string
	// Types are the event types it takes; nil is any (Spec.Types).
	Types []string
	build func(cfg config.Sink, at string) (Sink, error)
}

// Takes reports whether the vendor has a call for events of type t.
func (v Vendor) Takes(t string) bool { return v.Types == nil || slices.Contains(v.Types, t) }

// New builds a sink of this vendor from cfg: it decodes cfg.Settings
// strictly over the defaults, validates them and constructs the sink.
// Errors name their keys under at (sinks[0].settings).
func (v Vendor) New(cfg config.Sink, at string) (Sink, error) { return v.build(cfg, at) }

// Registry holds vendors by name. The zero value is empty and ready.
type Registry struct {
	mu     sync.Mutex
	byName map[string]Vendor
	sealed bool
}

// Add registers v; it panics on an empty or repeated name (a programming
// error, found when the binary starts) or once the registry has been read.
func (r *Registry) Add(v Vendor) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.sealed:
		panic("sinks: vendor " + v.Name + " registered after the registry was read; register from init")
	case v.Name == "" || v.build == nil:
		panic("sinks: a vendor needs a name and a constructor")
	case r.byName[v.Name].Name != "":
		panic("sinks: vendor " + v.Name + " registered twice")
	}
	if r.byName == nil {
		r.byName = map[string]Vendor{}
	}
	r.byName[v.Name] = v
}

// Lookup returns the vendor registered under name.
func (r *Registry) Lookup(name string) (Vendor, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sealed = true
	v, ok := r.byName[name]
	return v, ok
}

// Vendors lists the vendors, by name.
func (r *Registry) Vendors() []Vendor {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sealed = true
	out := make([]Vendor, 0, len(r.byName))
	for _, v := range r.byName {
		out = append(out, v)
	}
	slices.SortFunc(out, func(a, b Vendor) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// batching lists the vendors that batch, by name.
func (r *Registry) batching() []string {
	var names []string
	for _, v := range r.Vendors() {
		if v.Batches {
			names = append(names, v.Name)
		}
	}
	return names
}

// Names lists the vendors' names, sorted.
func (r *Registry) Names() []string {
	var names []string
	for _, v := range r.Vendors() {
		names = append(names, v.Name)
	}
	return names
}

// Build creates every configured sink, or says what is wrong with each.
func (r *Registry) Build(cfgs []config.Sink) (map[string]Sink, error) {
	out := make(map[string]Sink, len(cfgs))
	var errs []error
	for i, c := range cfgs {
		v, ok := r.Lookup(c.Vendor)
		if !ok {
			what := fmt.Sprintf("%q is not a vendor", c.Vendor)
			if c.Vendor == "" {
				what = "is required"
			}
			errs = append(errs, fmt.Errorf("sinks[%d].vendor: %s; use one of %s", i, what, strings.Join(r.Names(), ", ")))
			continue
		}
		s, err := v.New(c, config.SettingsKey(i))
		if err == nil {
			err = checkBatch(i, c, s, r.batching())
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out[c.Name] = s
	}
	return out, errors.Join(errs...)
}

// vendors is every vendor compiled into the binary (see the package note
// above for why it is package-level).
var vendors Registry

// Register adds a vendor to the binary's registry. Call it from init only.
func Register[S any](spec Spec[S]) { vendors.Add(spec.vendor()) }

// Vendors lists the vendors compiled into the binary, by name.
func Vendors() []Vendor { return vendors.Vendors() }

// Lookup finds a vendor compiled into the binary.
func Lookup(name string) (Vendor, bool) { return vendors.Lookup(name) }

// Build creates every configured sink with the binary's vendors.
func Build(cfgs []config.Sink) (map[string]Sink, error) { return vendors.Build(cfgs) }

// vendor erases the settings type: decode strictly over the defaults,
// validate, build.
func (spec Spec[S]) vendor() Vendor {
	return Vendor{
		Name:     spec.Name,
		Summary:  spec.Summary,
		Batches:  spec.Batches,
		Types:    slices.Clone(spec.Types),
		Settings: yamlKeys(reflect.TypeFor[S]()),
		build: func(cfg config.Sink, at string) (Sink, error) {
			var s S
			if spec.Defaults != nil {
				s = spec.Defaults()
			}
			if err := decodeSettings(cfg.Settings, at, &s); err != nil {
				return nil, err
			}
			if spec.Validate != nil {
				if err := spec.Validate(&s, at); err != nil {
					return nil, err
				}
			}
			sink, err := spec.New(cfg, s)
			if err != nil {
				return nil, err
			}
			// A programming error, found by any build of the vendor: the
			// batch key's check and its error trust Batches.
			switch _, batches := sink.(BatchSink); {
			case batches && !spec.Batches:
				return nil, fmt.Errorf("sinks: vendor %s batches but is not registered with Batches", spec.Name)
			case !batches && spec.Batches:
				return nil, fmt.Errorf("sinks: vendor %s is registered with Batches but its sink does not batch", spec.Name)
			}
			return sink, nil
		},
	}
}

// yamlKeys lists a settings struct's top-level keys.
func yamlKeys(t reflect.Type) []string {
	if t.Kind() != reflect.Struct {
		return nil
	}
	var keys []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" || !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		keys = append(keys, name)
	}
	return keys
}

// decodeSettings decodes a vendor's settings strictly, so a misspelt key
// fails at start instead of silently sending without a credential.
func decodeSettings(n yaml.Node, at string, into any) error {
	if n.Kind == 0 {
		return nil
	}
	var buf bytes.Buffer
	if err := yaml.NewEncoder(&buf).Encode(&n); err != nil {
		return fmt.Errorf("%s: %w", at, err)
	}
	dec := yaml.NewDecoder(&buf)
	dec.KnownFields(true)
	if err := dec.Decode(into); err != nil {
		return fmt.Errorf("%s: %w", at, err)
	}
	return nil
}

// required names each empty setting.
func required(at string, kv ...string) error {
	var errs []error
	for i := 0; i+1 < len(kv); i += 2 {
		switch v := kv[i+1]; {
		case strings.TrimSpace(v) == "":
			errs = append(errs, fmt.Errorf("%s.%s: is required", at, kv[i]))
		case strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }):
			// Sent in a header (or the URL), where net/http refuses it
			// before the request leaves: every delivery would fail as
			// transient. The value is not echoed: it may be a secret.
			errs = append(errs, fmt.Errorf("%s.%s: contains a control character (a line break?); it is sent in a header and must be one line: check the variable or file it comes from", at, kv[i]))
		}
	}
	return errors.Join(errs...)
}
