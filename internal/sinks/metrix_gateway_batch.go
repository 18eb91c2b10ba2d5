package sinks

import (
	"context"
	"sync"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Batching for the Metrix gateway. A request carries one user (its
// customUserId and metrixUserId) and several messages for that user, so a
// batch becomes one request per user, the users' requests in parallel (up
// to the sink's concurrency). Within a user's request the messages keep
// the order the events came in, and with auto_register_user one empty
// "user" message goes first, unless the first message is the user's own:
// the per-event path's guarantee (the user is registered before its
// actions count) for one registration per request instead of per event.
// The vendor answers a request whole; a refusal that may be one message's
// is bisected, each part registering again (see bisect: Metrix
// de-duplicates on message ids, so a re-sent message is harmless).
//
// The gateway publishes no limit on messages per request; a user's
// request carries at most metrixGatewayMaxMessages (Chapar's own bound,
// inferred to be safe, like Chabok's trackBulk), more go in several
// requests in order. A batch spans many users, so it may be larger: the
// more events per user it holds, the fewer requests.
const metrixGatewayMaxMessages = 1000

func (m *metrixGateway) MaxBatch() int { return config.MaxBatchItems }

// BatchKey is the user a request is for: the dispatcher batches each
// user's events apart (KeyedBatchSink), since a request takes one user.
func (m *metrixGateway) BatchKey(ev *envelope.Event) string {
	u := ev.EventUser()
	return u.ID + "\x00" + u.MetrixUserID
}

// userRequest is one user's share of a batch.
type userRequest struct {
	body metrixGatewayBody // the user's ids
	msgs []metrixMessage
	at   []int // msgs[k] is the batch's delivery at[k]
}

func (m *metrixGateway) DeliverBatch(ctx context.Context, ds []*Delivery) []error {
	errs := make([]error, len(ds))
	var users []*userRequest
	byUser := map[[2]string]*userRequest{}
	for i, d := range ds {
		body, msg, err := m.message(d)
		if err != nil {
			errs[i] = err
			continue
		}
		key := [2]string{body.CustomUserID, body.MetrixUserID}
		u := byUser[key]
		if u == nil {
			u = &userRequest{body: body}
			byUser[key] = u
			users = append(users, u)
		}
		u.msgs = append(u.msgs, msg)
		u.at = append(u.at, i)
	}
	sem := make(chan struct{}, m.parallel)
	var wg sync.WaitGroup
	for _, u := range users {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			// A part that failed transiently ends the user's requests:
			// the rest get its error unsent, so no later message of the
			// user is accepted ahead of one to be retried.
			var stop error
			for lo := 0; lo < len(u.msgs); lo += metrixGatewayMaxMessages {
				hi := min(lo+metrixGatewayMaxMessages, len(u.msgs))
				if stop != nil {
					for k := lo; k < hi; k++ {
						errs[u.at[k]] = unsentAfter(stop)
					}
					continue
				}
				bisect(ctx, u.msgs[lo:hi], func(ctx context.Context, msgs []metrixMessage) error {
					return m.sendUser(ctx, u.body, msgs)
				}, func(i, j int, err error) {
					for k := lo + i; k < lo+j; k++ {
						errs[u.at[k]] = err // each index is one goroutine's
					}
					if stop == nil && stopsBatch(err) {
						stop = err
					}
				})
			}
		})
	}
	wg.Wait()
	return errs
}

// sendUser is one request with one user's messages, registered first.
func (m *metrixGateway) sendUser(ctx context.Context, body metrixGatewayBody, msgs []metrixMessage) error {
	reg, err := m.stamp(ctx, body, msgs)
	if err != nil {
		return err
	}
	body.Messages = make([]metrixMessage, 0, len(msgs)+1)
	if reg != nil {
		body.Messages = append(body.Messages, *reg)
	}
	body.Messages = append(body.Messages, msgs...)
	req, err := m.post(body)
	if err != nil {
		return err
	}
	return send(ctx, m.client, req, findCode)
}
