package config

import (
	"errors"
	"fmt"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/retry"
)

// builtinSinkDefaults are the values of the sink keys that neither a sink
// nor sink_defaults writes.
func builtinSinkDefaults() SinkDefaults {
	return SinkDefaults{
		Concurrency:   8,
		MaxAckPending: 1000,
		Timeout:       10 * time.Second,
		Retry:         retry.DefaultPolicy(),
		Breaker:       retry.DefaultBreakerSettings(),
	}
}

// resolveSinks decodes each sink over the resolved sink_defaults, so a key
// the sink writes keeps its value (zero included) and a key it leaves out
// is inherited. cfg.SinkDefaults already holds sink_defaults decoded over
// the built-in defaults; doc is the expanded document.
//
// Two built-in defaults depend on other keys, and only apply when neither
// the sink nor sink_defaults writes the key: max_ack_pending is at least
// concurrency, and retry.max_interval at least retry.initial_interval.
func (c *Config) resolveSinks(doc *yaml.Node) error {
	top := doc
	if top.Kind == yaml.DocumentNode && len(top.Content) == 1 {
		top = top.Content[0]
	}
	dflt := written(mapValue(top, "sink_defaults"))
	derive := func(wrote map[string]bool, concurrency int, maxAckPending *int, p *retry.Policy) {
		if !wrote["max_ack_pending"] {
			*maxAckPending = max(*maxAckPending, concurrency)
		}
		if !wrote["retry.max_interval"] {
			p.MaxInterval = max(p.MaxInterval, p.InitialInterval)
		}
	}
	d := &c.SinkDefaults
	derive(dflt, d.Concurrency, &d.MaxAckPending, &d.Retry)

	seq := mapValue(top, "sinks")
	if seq == nil || seq.Kind != yaml.SequenceNode {
		return nil // no sinks, or the decode above already refused them
	}
	c.inherited = map[string]string{}
	var errs []error
	for i, item := range seq.Content {
		if i >= len(c.Sinks) {
			break
		}
		s := Sink{
			Concurrency:   d.Concurrency,
			MaxAckPending: d.MaxAckPending,
			Timeout:       d.Timeout,
			Retry:         d.Retry,
			Breaker:       d.Breaker,
		}
		if err := item.Decode(&s); err != nil {
			// The strict decode above caught what a person would write;
			// go on with what decoded, so the other keys are checked.
			errs = append(errs, fmt.Errorf("sinks[%d]: %w", i, err))
		}
		own := written(item)
		both := map[string]bool{}
		for k := range own {
			both[k] = true
		}
		for k := range dflt {
			both[k] = true
			if !own[k] {
				c.inherited[fmt.Sprintf("sinks[%d].%s", i, k)] = "sink_defaults." + k
			}
		}
		derive(both, s.Concurrency, &s.MaxAckPending, &s.Retry)
		if s.Batch != nil && !both["max_ack_pending"] {
			// Room for a batch in every request slot and one filling.
			s.MaxAckPending = max(s.MaxAckPending, s.Batch.MaxItems*(s.Concurrency+1))
		}
		c.Sinks[i] = s
	}
	return errors.Join(errs...)
}

// mapValue is the value of key in the mapping n, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	n = unalias(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return unalias(n.Content[i+1])
		}
	}
	return nil
}

func unalias(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// written lists the keys a mapping writes, nested ones dotted
// (retry.max_attempts), with aliases and << merges followed.
func written(n *yaml.Node) map[string]bool {
	keys := map[string]bool{}
	var visit func(n *yaml.Node, at string)
	visit = func(n *yaml.Node, at string) {
		n = unalias(n)
		if n == nil || n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i].Value, n.Content[i+1]
			if n.Content[i].ShortTag() == "!!merge" {
				if v = unalias(v); v != nil && v.Kind == yaml.SequenceNode {
					for _, m := range v.Content {
						visit(m, at)
					}
				} else {
					visit(v, at)
				}
				continue
			}
			if at != "" {
				k = at + "." + k
			}
			keys[k] = true
			visit(v, k)
		}
	}
	visit(n, "")
	return keys
}
