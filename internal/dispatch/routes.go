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
	if envelope.IsOpsType(ev.Type) {
		return r.matchOps(ev)
	}
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

// matchOps routes one of Chapar's operational events (chapar.ops.*):
//
//   - only by a route that names its type: a route without types is the
//     producers' catch-all, and sending Chapar's own reports to every
//     vendor it lists would dead-letter them there (unsupported_event),
//     each dead letter a new report;
//   - never by destinations: Chapar sets none, and one a producer wrote
//     on a forged ops event is not obeyed;
//   - never to the sink it is about (its CloudEvents subject): the loop
//     guard. A sink that fails is not sent the news of its failure,
//     which would fail in turn and report itself again.
//
// An ops event about a failure to deliver an ops event is never published
// (opsevents), so what is left cannot cascade.
func (r *Routes) matchOps(ev *envelope.Event) []string {
	var out []string
	for _, rt := range r.routes {
		if !slices.Contains(rt.Types, ev.Type) {
			continue
		}
		if len(rt.Names) > 0 && !matchAny(rt.Names, ev.Name()) {
			continue
		}
		for _, s := range rt.Sinks {
			if s != ev.Subject {
				out = append(out, s)
			}
		}
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
