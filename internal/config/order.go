package config

import (
	"fmt"
	"strings"
	"text/template"

	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

// OrderByUser is the order key that means "per user": the CloudEvents
// partitionkey extension when the event has one, else its subject.
const OrderByUser = "by_user"

// Order is a sink's per-key order: events with the same key reach the
// vendor in the order they were published, and while one is being retried
// the later ones of its key wait. Events of different keys, and events
// without a key, are not held back.
//
// In YAML it is either the word by_user or a mapping:
//
//	order: by_user
//	order: {key: "{{.Extensions.tenant}}/{{.Subject}}"}
type Order struct {
	// Key is by_user or a Go text/template over the event
	// (pkg/envelope.Event: .Subject, .Type, .Source, .Extensions.<name>, …).
	// An event whose key is empty is delivered unordered.
	Key string `yaml:"key"`
}

// UnmarshalYAML reads the shorthand (order: by_user) and the mapping.
func (o *Order) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		o.Key = n.Value
		return nil
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			switch k.Value {
			case "key":
				if err := n.Content[i+1].Decode(&o.Key); err != nil {
					return fmt.Errorf("order.key: %w", err)
				}
			default:
				return fmt.Errorf("line %d: order.%s: unknown key; order has only key (by_user or a template)", k.Line, k.Value)
			}
		}
		return nil
	}
	return fmt.Errorf("line %d: order: use by_user or {key: <template>}", n.Line)
}

// Template parses a key template (not by_user). The key is the template's
// output; a template that fails on an event (a nil field) gives no key.
func (o Order) Template() (*template.Template, error) {
	return template.New("order.key").Option("missingkey=zero").Parse(o.Key)
}

// orderErrors validates a sink's order key.
func orderErrors(at string, o Order) []error {
	key := at + ".order.key"
	switch {
	case o.Key == OrderByUser:
		return nil
	case strings.TrimSpace(o.Key) == "":
		return []error{fmt.Errorf("%s: is empty; use by_user (the partitionkey extension, else the subject) "+
			"or a template such as \"{{.Extensions.tenant}}/{{.Subject}}\", or remove order", key)}
	case !strings.Contains(o.Key, "{{"):
		return []error{fmt.Errorf("%s: is %q, neither by_user nor a template: a constant key would deliver the "+
			"whole sink one event at a time; use by_user or a template such as \"{{.Subject}}\"", key, o.Key)}
	}
	t, err := o.Template()
	if err != nil {
		return []error{fmt.Errorf("%s: is not a valid template: %w", key, err)}
	}
	// Run it over an event with every attribute set, so a misspelt field
	// (.Subjct) is reported now, not as "no key" on every event.
	probe := &envelope.Event{Envelope: envelope.Envelope{
		ID: "id", Source: "source", Type: envelope.TypeTrack, Subject: "subject",
		Extensions: map[string]string{"partitionkey": "p"},
	}, Track: &envelope.Track{}, Purchase: &envelope.Purchase{}, Identify: &envelope.Identify{}, Notify: &envelope.Notify{}}
	if err := t.Execute(&strings.Builder{}, probe); err != nil {
		return []error{fmt.Errorf("%s: %w; the fields are those of an event (.Subject, .Type, .Source, .ID, "+
			".Extensions.<name>, .Track.User.ID, …)", key, err)}
	}
	return nil
}
