package dispatch

import (
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/filter"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Routes is the routing table: which sinks an event goes to.
type Routes struct {
	routes []route
}

// route is a config route with its filter compiled (nil: none).
type route struct {
	config.Route
	filter *filter.Filter
}

// NewRoutes builds the table from config (validated already), compiling
// each route's filter once.
func NewRoutes(routes []config.Route) (*Routes, error) {
	r := &Routes{routes: make([]route, len(routes))}
	for i, c := range routes {
		r.routes[i].Route = c
		if c.Filter == "" {
			continue
		}
		f, err := filter.Compile(c.Filter)
		if err != nil {
			return nil, fmt.Errorf("routes[%d].filter: %w", i, err)
		}
		r.routes[i].filter = f
	}
	return r, nil
}

// FilterFailure is a route's filter that could not be evaluated on an
// event (a field it reads is absent or of another type, the data is not
// JSON): the route does not match the event.
type FilterFailure struct {
	Route int
	Err   error
}

// Match returns the sinks for an event, each once, in table order. The
// envelope's destinations extension, when present, replaces the table.
func (r *Routes) Match(ev *envelope.Event) []string {
	sinks, _ := r.Eval(ev)
	return sinks
}

// Eval is Match that also returns the filters that failed on the event.
// A route's filter is evaluated only if its types and names match, and
// the event's data is decoded at most once, only for a filter that reads
// it: a table without filters costs what it did before them.
//
// A filter that fails does not match: a producer's event that lacks a
// field one route reads must not stop the other routes, and Chapar cannot
// tell a mistyped field from an event that is not meant for the route.
// Every sink's worker, and every replica, reaches the same answer, since
// a filter is a pure function of the event.
func (r *Routes) Eval(ev *envelope.Event) (sinks []string, failed []FilterFailure) {
	ops := envelope.IsOpsType(ev.Type)
	if d := ev.DestinationList(); len(d) > 0 && !ops {
		return uniq(d), nil
	}
	var out []string
	var in *filter.Input
	name := ev.Name()
	for i, rt := range r.routes {
		if !rt.selects(ev.Type, name) {
			continue
		}
		if rt.filter != nil {
			if in == nil {
				in = filter.NewInput(ev)
			}
			ok, err := rt.filter.Match(in)
			if err != nil {
				failed = append(failed, FilterFailure{Route: i, Err: err})
			}
			if !ok {
				continue
			}
		}
		if ops {
			out = appendOthers(out, rt.Sinks, ev.Subject)
			continue
		}
		if out == nil {
			// The first route's sinks as they are (most events match one
			// route): capped, so an append copies, never writes the table.
			out = slices.Clip(rt.Sinks)
			continue
		}
		out = append(out, rt.Sinks...)
	}
	return uniq(out), failed
}

// teller is the sink whose worker tells of route i's filter failures:
// its first.
func (r *Routes) teller(i int) string {
	if s := r.routes[i].Sinks; len(s) > 0 {
		return s[0]
	}
	return ""
}

// selects says whether the route's types and names take the event.
func (rt *route) selects(typ, name string) bool {
	if (len(rt.Types) > 0 || envelope.IsOpsType(typ)) && !slices.Contains(rt.Types, typ) {
		return false // an ops event is taken only by a route naming its type (opsRouting)
	}
	return len(rt.Names) == 0 || matchAny(rt.Names, name)
}

// Reason is why an event was or was not sent to a sink.
type Reason string

const (
	// Routed: a route (Why.Route) sends the event to the sink.
	Routed Reason = "routed"
	// Named: the event's destinations extension names the sink.
	Named Reason = "named"
	// NoRoute: no route that names the sink takes the event's type and
	// name.
	NoRoute Reason = "no_route"
	// FilteredOut: routes that name the sink take the event's type and
	// name, but their filters kept it out; Why.Route is the first, and
	// Why.Err says why its filter failed, if it did.
	FilteredOut Reason = "filtered_out"
	// OtherDestinations: the event's destinations extension names other
	// sinks, which replaces the routes.
	OtherDestinations Reason = "other_destinations"
	// AboutItself: an operational event about the sink, which is never
	// sent to it (the loop guard, opsRouting).
	AboutItself Reason = "about_itself"
)

// Why is Match told from one sink's side: whether the event goes to it,
// and by which route or else why not.
type Why struct {
	Reason Reason
	Route  int // the route that sent it, or the first that filtered it out; -1 for none
	Err    error
}

// Why says why the event is or is not sent to sink: the answer a lookup
// gives for a sink an event never reached. It agrees with Match (the
// same selects and filters, in the same order).
func (r *Routes) Why(ev *envelope.Event, sink string) Why {
	ops := envelope.IsOpsType(ev.Type)
	if ops && sink == ev.Subject {
		return Why{Reason: AboutItself, Route: -1}
	}
	if d := ev.DestinationList(); len(d) > 0 && !ops {
		if slices.Contains(d, sink) {
			return Why{Reason: Named, Route: -1}
		}
		return Why{Reason: OtherDestinations, Route: -1}
	}
	out := Why{Reason: NoRoute, Route: -1}
	var in *filter.Input
	name := ev.Name()
	for i, rt := range r.routes {
		if !slices.Contains(rt.Sinks, sink) || !rt.selects(ev.Type, name) {
			continue
		}
		if rt.filter == nil {
			return Why{Reason: Routed, Route: i}
		}
		if in == nil {
			in = filter.NewInput(ev)
		}
		ok, err := rt.filter.Match(in)
		if ok {
			return Why{Reason: Routed, Route: i}
		}
		if out.Reason == NoRoute {
			out = Why{Reason: FilteredOut, Route: i, Err: err}
		}
	}
	return out
}

// Explain says w in a sentence, for a person looking up ev.
func (w Why) Explain(ev *envelope.Event) string {
	switch w.Reason {
	case Routed:
		return fmt.Sprintf("routes[%d] sends it", w.Route)
	case Named:
		return "its destinations name it"
	case OtherDestinations:
		return fmt.Sprintf("its destinations name other sinks (%s)", strings.Join(ev.DestinationList(), ", "))
	case AboutItself:
		return "it is an operational event about this sink, never sent to it"
	case FilteredOut:
		if w.Err != nil {
			return fmt.Sprintf("filtered out by routes[%d].filter, which failed on it: %v", w.Route, w.Err)
		}
		return fmt.Sprintf("filtered out by routes[%d].filter", w.Route)
	}
	if n := ev.Name(); n != "" && n != ev.Type {
		return fmt.Sprintf("no route sends %s events named %q to it", ev.Type, n)
	}
	return fmt.Sprintf("no route sends %s events to it", ev.Type)
}

// opsRouting: one of Chapar's operational events (chapar.ops.*) is
// routed
//
//   - only by a route that names its type (selects): a route without
//     types is the producers' catch-all, and sending Chapar's own reports
//     to every vendor it lists would dead-letter them there
//     (unsupported_event), each dead letter a new report;
//   - never by destinations: Chapar sets none, and one a producer wrote
//     on a forged ops event is not obeyed;
//   - never to the sink it is about (its CloudEvents subject): the loop
//     guard. A sink that fails is not sent the news of its failure,
//     which would fail in turn and report itself again.
//
// An ops event about a failure to deliver an ops event is never published
// (opsevents), so what is left cannot cascade. Filters apply as to any
// event.

// appendOthers appends sinks to out, leaving out the sink the event is
// about.
func appendOthers(out, sinks []string, about string) []string {
	for _, s := range sinks {
		if s != about {
			out = append(out, s)
		}
	}
	return out
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// uniq is in without repeats, in order: in itself when it has none (the
// usual case, which then makes nothing), nil when it is empty. Callers
// only read what Eval returns.
func uniq(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	for i := range in {
		if slices.Contains(in[:i], in[i]) {
			var out []string
			for _, s := range in {
				if !slices.Contains(out, s) {
					out = append(out, s)
				}
			}
			return out
		}
	}
	return in
}

// SinkFilter is which events a sink's events consumers read
// (topology.EventFilter), decided from the config: only the types of the
// routes that name it (and the direct subjects, where events carrying
// destinations are published), so the server never delivers it an event
// of another type. It reads the whole stream when
//   - byRoute is off (streams.filter_by_route: false);
//   - lead (ChooseLeads): the sink counts every event received and
//     unrouted and dead-letters an invalid envelope, or an event on a
//     subject its sink does not read, on any subject, so it must see them
//     all;
//   - a route naming it lists no types (it matches every type).
//
// names and a route's content filter stay the worker's to check: the
// subject filter only has to be a superset of what the sink may deliver,
// and Match still decides exactly.
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

// ChooseLeads is which of a config's sinks (names, in config order) lead,
// given those whose consumers are marked leads on the server
// (topology.Leads): every marked one, or if none is, the first, which its
// bind marks. A marked sink leads in every config that has it, so no
// config's order narrows it: a config that puts another sink first (or
// reorders them) leaves the lead where it is, and nothing the lead has
// not read yet goes unchecked. A config may have more than one lead (two
// dispatchers of different configs that bound a fresh deployment at
// once): a second full read and events counted twice in
// chapar_events_received_total, never an event unchecked.
func ChooseLeads(names []string, marked map[string]bool) map[string]bool {
	out := map[string]bool{}
	for _, s := range names {
		if marked[s] {
			out[s] = true
		}
	}
	if len(out) == 0 && len(names) > 0 {
		out[names[0]] = true
	}
	return out
}
