package sinks

import (
	"context"
)

// Chabok's trackBulk (docs: vendor-docs README, "also exists"):
//
//	POST https://{app_id}.push.adpdigital.com/api/installations/trackBulk
//	[ <track item>, ... ]   at most 1,000 items, each as for track
//	→ 2xx {"queued": true, "n": N}
//
// The answer reports no per-item results: a request is accepted or
// refused whole (a refusal is taken to queue nothing: LoopBack validates
// before it stores). A refusal that may be one item's is bisected down to
// the bad item (see bisect). Purchases have no bulk endpoint: each goes to
// trackPurchase alone, after the bulk.
const chabokMaxBulk = 1000

func (c *chabok) MaxBatch() int { return chabokMaxBulk }

// DeliverBatch sends the tracks of ds in one trackBulk request and each
// purchase in its own trackPurchase request.
func (c *chabok) DeliverBatch(ctx context.Context, ds []*Delivery) []error {
	errs := make([]error, len(ds))
	items := make([]chabokEvent, 0, len(ds))
	at := make([]int, 0, len(ds)) // items[k] is ds[at[k]]
	var purchases []int
	for i, d := range ds {
		body, path, err := c.event(d)
		switch {
		case err != nil:
			errs[i] = err
		case path != "/installations/track":
			purchases = append(purchases, i)
		default:
			items = append(items, body)
			at = append(at, i)
		}
	}
	// A transient failure (a 429 or 5xx, a timeout, a reset) ends the
	// batch's sending: the purchases after it get its error unsent, so a
	// Retry-After is honoured and a hung vendor costs one timeout, not one
	// per purchase.
	var stop error
	bisect(ctx, items, c.bulk, func(lo, hi int, err error) {
		for k := lo; k < hi; k++ {
			errs[at[k]] = err
		}
		if stop == nil && stopsBatch(err) {
			stop = err
		}
	})
	for _, i := range purchases {
		if stop != nil {
			errs[i] = unsentAfter(stop)
			continue
		}
		errs[i] = c.Deliver(ctx, ds[i])
		if stopsBatch(errs[i]) {
			stop = errs[i]
		}
	}
	return errs
}

// bulk is one trackBulk request. Its errors are LoopBack's, as track's
// are: read with chabokCode, so a batched event's dead letter carries the
// vendor's code whatever shape it came in.
func (c *chabok) bulk(ctx context.Context, items []chabokEvent) error {
	req, err := c.post("/installations/trackBulk", chabokEvents(items))
	if err != nil {
		return err
	}
	return send(ctx, c.client, req, chabokCode)
}
