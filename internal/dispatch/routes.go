package dispatch

import (
	"path"
	"slices"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Routes is the routing table: which sinks an event goes to.
type Routes struct {
	routes []config.Route
}

// NewRoutes builds the table from config (validated already).
func NewRoutes(routes []config.Route) *Routes { return &Routes{routes: routes} }

// Match returns the sinks for an event, each once, in table order. The
// envelope's destinations extension, when present, replaces the table.
func (r *Routes) Match(ev *envelope.Event) []string {
	if d := ev.DestinationList(); len(d) > 0 {
		return uniq(d)
	}
	var out []string
	name := ev.Name()
	for _, rt := range r.routes {
		if len(rt.Types) > 0 && !slices.Contains(rt.Types, ev.Type) {
			continue
		}
		if len(rt.Names) > 0 && !matchAny(rt.Names, name) {
			continue
		}
		out = append(out, rt.Sinks...)
	}
	return uniq(out)
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

func uniq(in []string) []string {
	var out []string
	for _, s := range in {
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// SinkFilter is which events a sink's events consumers read
// (topology.EventFilter), decided from the config: only the types of the
// routes that name it (and the direct subjects, where events carrying
// destinations are published), so the server never delivers it an event
// of another type. It reads the whole stream when
//   - byRoute is off (streams.filter_by_route: false);
//   - lead: the process's first sink counts every event received and
//     unrouted and dead-letters an invalid envelope on any subject, so it
//     must see them all;
//   - a route naming it lists no types (it matches every type).
//
// names stay the worker's to check: a filter only has to be a superset of
// what the sink may deliver, and Match still decides exactly.
func SinkFilter(sink string, routes []config.Route, byRoute, lead bool) topology.EventFilter {
	if !byRoute || lead {
		return topology.EventFilter{}
	}
	f := topology.EventFilter{ByType: true, Types: []string{}}
	for _, r := range routes {
		if !slices.Contains(r.Sinks, sink) {
			continue
		}
		if len(r.Types) == 0 {
			return topology.EventFilter{}
		}
		f.Types = append(f.Types, r.Types...)
	}
	slices.Sort(f.Types)
	f.Types = slices.Compact(f.Types)
	return f
}
