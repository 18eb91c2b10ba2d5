package sinks

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// BatchSink is a Sink whose vendor takes several events in one request.
// The dispatcher batches for a sink that implements it and has a batch
// key in its config; other sinks get one Deliver per event.
type BatchSink interface {
	Sink
	// MaxBatch is the most deliveries one DeliverBatch call takes.
	MaxBatch() int
	// DeliverBatch delivers ds and returns one error per delivery, in
	// order: nil when the vendor accepted it, else what Deliver would have
	// returned for it alone (an *Error, or a context error on shutdown).
	DeliverBatch(ctx context.Context, ds []*Delivery) []error
}

// KeyedBatchSink is a BatchSink whose vendor takes one key's events per
// request (the Metrix gateway: one user). The dispatcher then gathers each
// key's events over the batching window, so a request carries many events
// of one key, and sends a key's batches one at a time, in order: a key's
// next batch leaves only once the one before is settled.
type KeyedBatchSink interface {
	BatchSink
	// BatchKey is the event's key; events with equal keys may share a
	// request.
	BatchKey(ev *envelope.Event) string
}

// batchRefuser is a BatchSink that cannot batch with some settings (the
// webhook in binary mode); noBatch says why, or "".
type batchRefuser interface{ noBatch() string }

// checkBatch refuses a batch key the sink cannot honour, naming the key
// and the vendors that batch (the registry's, Spec.Batches).
func checkBatch(i int, cfg config.Sink, s Sink, batching []string) error {
	if cfg.Batch == nil {
		return nil
	}
	bs, ok := s.(BatchSink)
	if !ok {
		return fmt.Errorf("sinks[%d].batch: vendor %s sends one event per request; remove batch (%s batch)", i, cfg.Vendor, andList(batching))
	}
	if r, ok := s.(batchRefuser); ok {
		if why := r.noBatch(); why != "" {
			return fmt.Errorf("sinks[%d].batch: %s; or remove batch", i, why)
		}
	}
	if n := bs.MaxBatch(); cfg.Batch.MaxItems > n {
		return fmt.Errorf("sinks[%d].batch.max_items: is %d; %s takes at most %d events per request", i, cfg.Batch.MaxItems, cfg.Vendor, n)
	}
	return nil
}

// bisect sends items in one request. When the vendor refuses the request
// as a whole for a reason that may be one item's (see itemsMayDiffer), it
// sends each half again, down to single items: a bad item then fails
// alone, its neighbours are delivered, at the cost of about 2·log₂(n)
// requests per bad item. The vendors document no per-item results, and a
// request they refuse is taken to have stored nothing (both re-sent halves
// are also harmless at a vendor that de-duplicates, as Metrix does on
// message ids). The halves go in order, so an order among items is kept.
// A part that fails transiently (a 429 or 5xx, a timeout, a reset) ends
// the sending: the parts after it get its error unsent, so a Retry-After
// is honoured and no later item is accepted ahead of an earlier one that
// is to be retried.
// set records the result of items[lo:hi].
func bisect[T any](ctx context.Context, items []T, send func(context.Context, []T) error, set func(lo, hi int, err error)) {
	var stop error
	var run func(lo, hi int)
	run = func(lo, hi int) {
		if stop != nil {
			set(lo, hi, unsentAfter(stop))
			return
		}
		err := send(ctx, items[lo:hi])
		if err == nil || hi-lo == 1 || !itemsMayDiffer(err) || ctx.Err() != nil {
			set(lo, hi, err)
			if stopsBatch(err) {
				stop = err
			}
			return
		}
		mid := lo + (hi-lo)/2
		run(lo, mid)
		run(mid, hi)
	}
	if len(items) > 0 {
		run(0, len(items))
	}
}

// stopsBatch says whether err, one request's of a batch, ends the batch's
// sending: any failure but a permanent answer (which is the request's
// items' own) is the vendor's or the connection's, and would meet the
// requests after it too. A delivery left unsent (unsentAfter) carries the
// error of a request that already stopped it.
func stopsBatch(err error) bool {
	var se *Error
	if errors.As(err, &se) {
		return se.Transient && !se.Unsent
	}
	return err != nil
}

// itemsMayDiffer says whether a refused request may be one item's fault:
// a permanent 4xx other than the credential and permission ones (401,
// 403, 407), which hold for every item alike. Transient failures retry
// every item anyway.
func itemsMayDiffer(err error) bool {
	se, ok := err.(*Error)
	if !ok || se.Transient || se.Status < 400 || se.Status >= 500 {
		return false
	}
	switch se.Status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusProxyAuthRequired:
		return false
	}
	return true
}

// andList is names as prose: "a", "a and b", "a, b and c".
func andList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}
