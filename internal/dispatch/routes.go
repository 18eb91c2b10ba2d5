package dispatch

import (
	"path"
	"slices"

	"github.com/chapar-dev/chapar/internal/config"
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
