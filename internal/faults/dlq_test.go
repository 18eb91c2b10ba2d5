package faults

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"
)

// (f) the dead-letter stream is unavailable while the vendor rejects some
// events (400, permanent). "Unavailable" is modelled by deleting CHAPAR_DLQ
// (it is empty at that point, so no record is destroyed) and recreating it
// with its saved config after a while: meanwhile every dead-letter write
// fails at once (no stream answers the subject), as when the stream has no
// leader or its servers are down. Goal: nothing lost, every rejected event
// dead-lettered once the stream is back, and the vendor asked only once per
// rejected event (the verdict is kept, not re-fetched from the vendor).
func TestDeadLetterStreamUnavailable(t *testing.T) {
	events, perSec, down := 2000, 500, 3*time.Second
	if long() {
		events, down = 20_000, 20*time.Second
	}
	const every = 50 // one event in every 50 is rejected
	w := newWorld(t, 1, 1, nil)
	ids := newIDs(events)
	// Only events published after the stream is deleted are rejected:
	// deleting it must not destroy a record.
	var rejected []string
	w.vendor.set(func(l *ledger) {
		for i := events/4 + 100; i < len(ids); i += every {
			l.failIDs[ids[i]] = http.StatusBadRequest
			rejected = append(rejected, ids[i])
		}
	})
	ctx := context.Background()
	s, err := w.js.Stream(ctx, dlqStream)
	if err != nil {
		t.Fatal(err)
	}
	w.prod.start(ids, perSec)
	w.waitAcked(events / 4)
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 0 {
		t.Fatalf("%s holds %d records; deleting it would destroy them", dlqStream, info.State.Msgs)
	}
	if err := w.js.DeleteStream(ctx, dlqStream); err != nil {
		t.Fatal(err)
	}
	time.Sleep(down) // the outage's length
	if _, err := w.js.CreateStream(ctx, info.Config); err != nil {
		t.Fatal(err)
	}
	healed := time.Now()
	o := w.settle(60*time.Second, healed)

	extra, missing := 0, 0
	for _, id := range rejected {
		if n := w.vendor.event(id).calls; n > 1 {
			extra += n - 1
		}
		if w.dlq.ids[id].count == 0 {
			missing++
		}
	}
	g := &goals{t: t}
	g.want(o.lost == 0, "%d events lost", o.lost)
	g.want(!o.wedged, "wedged: %v", o.stuck)
	g.want(missing == 0, "%d of %d rejected events not dead-lettered", missing, len(rejected))
	g.want(extra == 0, "%d vendor calls beyond one per rejected event", extra)
	g.finish(result{
		scenario: "f. dead-letter stream unavailable",
		load:     fmt.Sprintf("%d events at %d/s, %d rejected (400), 1 replica", events, perSec, len(rejected)),
		o:        o,
		notes: fmt.Sprintf("%s deleted for %s, then recreated; %d vendor calls beyond one per rejected event (goal 0); recovery from the stream's return",
			dlqStream, down, extra),
	}, "")
}
