// Package redeliver re-sends the events of a time window to one sink
// (dispatcher sinks redeliver, and the console's form): for when a vendor
// lost what it was sent, or a mapping was wrong and is fixed now.
//
// It reads the events streams, which keep every event for streams.max_age
// whether delivered or not, from the first event stored at or after
// Since, every partition in time order; keeps those the sink's current
// routes would send it (or every event, with All) that pass the filters;
// and publishes each to the sink's retry-due subject, as dlq replay does:
// the sink's retry consumer delivers it, and no other sink sees it. The
// envelope is the stored one, so its id stays the vendor's idempotency
// key. The reads are direct gets: nothing is left on the server.
package redeliver

import (
	"path"
	"time"

	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Filter is which events of the stream a redelivery re-sends; zero fields
// match everything.
type Filter struct {
	// Since is required: the window begins at the first event stored at
	// or after it.
	Since time.Time
	// Until ends the window (inclusive); zero is when the job starts, so
	// a job ends even while events keep coming (those are delivered as
	// usual).
	Until time.Time
	// Type is the envelope's type, e.g. chapar.track.
	Type string
	// Name is the event's name, or a path.Match pattern as routes take
	// (order_*).
	Name string
	// Subject is the envelope's CloudEvents subject (most often the user).
	Subject string
	// All re-sends every event of the window that passes the filters,
	// not only those the sink's current routes (or an envelope's
	// destinations) would send it: for an event the routes left out by
	// mistake.
	All bool
}

// Why an event of the window is not re-sent; "" when it is.
const (
	skipFiltered = "filtered"  // Type, Name or Subject did not match
	skipNotRoute = "not_route" // the sink's routes would not send it
)

// decide says whether the sink is to get ev again, and if not, why. It is
// the whole of the choice, apart from the window: routes are the
// deployment's current ones (the config given), so an event routed to the
// sink only since a fix is re-sent, and one routed away from it is not.
func (f Filter) decide(routes *dispatch.Routes, sink string, ev *envelope.Event) string {
	switch {
	case f.Type != "" && ev.Type != f.Type,
		f.Subject != "" && ev.Subject != f.Subject,
		f.Name != "" && !nameMatch(f.Name, ev.Name()):
		return skipFiltered
	case !f.All && !routed(routes.Match(ev), sink):
		return skipNotRoute
	}
	return ""
}

func nameMatch(pattern, name string) bool {
	ok, _ := path.Match(pattern, name)
	return ok
}

func routed(targets []string, sink string) bool {
	for _, t := range targets {
		if t == sink {
			return true
		}
	}
	return false
}
