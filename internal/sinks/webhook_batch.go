package sinks

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
)

// The webhook's batching, opted into with the sink's batch key, for a
// receiver that takes a JSON array:
//
//	body: structured   [<event>, …]   Content-Type: application/cloudevents-batch+json
//	                                  (the CloudEvents HTTP binding's batched mode)
//	body: data         [<data>, …]    Content-Type: application/json
//	template           [<rendered>, …] Content-Type: application/json
//	body: binary       no batching: the attributes travel as headers (a config error)
//
// A batch is signed like one event, with webhook-id "batch_" and the hex
// SHA-256 of its events' ids, newline-separated: a retry of the same batch
// carries the same id, a different grouping a different one.
//
// The receiver answers for the request as a whole: 2xx delivers every
// item; an answer that retries, retries every item; a refusal that may be
// one item's (a permanent 4xx other than 401, 403 and 407) is bisected down
// to the bad item (see bisect), so its neighbours are delivered. An item
// whose template fails is dead-lettered alone and never sent.
const webhookMaxBatch = 1000

func (w *webhook) MaxBatch() int { return webhookMaxBatch }

// noBatch says why this sink cannot batch as configured.
func (w *webhook) noBatch() string {
	if w.s.Body == webhookBinary {
		return "settings.body binary carries each event's attributes as headers, one event per request; use structured or data to batch"
	}
	return ""
}

type webhookItem struct {
	id   string
	body []byte
}

// DeliverBatch sends ds as one JSON array, bisecting a refusal.
func (w *webhook) DeliverBatch(ctx context.Context, ds []*Delivery) []error {
	errs := make([]error, len(ds))
	items := make([]webhookItem, 0, len(ds))
	at := make([]int, 0, len(ds)) // items[k] is ds[at[k]]
	for i, d := range ds {
		body, _, err := w.body(d)
		if err != nil {
			errs[i] = err
			continue
		}
		items = append(items, webhookItem{id: d.Event.ID, body: body})
		at = append(at, i)
	}
	bisect(ctx, items, w.batch, func(lo, hi int, err error) {
		for k := lo; k < hi; k++ {
			errs[at[k]] = err
		}
	})
	return errs
}

// batch is one request carrying items as a JSON array.
func (w *webhook) batch(ctx context.Context, items []webhookItem) error {
	var body bytes.Buffer
	ids := sha256.New()
	body.WriteByte('[')
	for k, it := range items {
		if k > 0 {
			body.WriteByte(',')
		}
		body.Write(it.body)
		ids.Write([]byte(it.id))
		ids.Write([]byte{'\n'})
	}
	body.WriteByte(']')
	h := w.headers.Clone()
	if w.s.Body == webhookStructured && w.tmpl == nil {
		h.Set("Content-Type", "application/cloudevents-batch+json; charset=utf-8")
	} else {
		h.Set("Content-Type", "application/json")
	}
	req, err := w.signed("batch_"+hex.EncodeToString(ids.Sum(nil)), body.Bytes(), h)
	if err != nil {
		return err
	}
	return call(ctx, w.client, req, w.errors)
}

var _ BatchSink = (*webhook)(nil)
