package sinks

import (
	"context"

	"github.com/nats-io/nats.go/jetstream"
)

// ReserveMetrixTime is a Metrix gateway's time store on its own, attached
// to JetStream as the dispatcher attaches it: reserve gives one message
// (id, wanting ms want) of user a millisecond.
func ReserveMetrixTime(ctx context.Context, js jetstream.JetStream, prefix string) (reserve func(ctx context.Context, user, id string, want int64) (int64, error), err error) {
	kv, err := openKVTimes(ctx, State{JS: js, Prefix: prefix, Replicas: 1, Memory: true})
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, user, id string, want int64) (int64, error) {
		var at int64
		err := kv.reserve(ctx, []string{user}, func(r *metrixBook) {
			at = r.take(metrixSlot{Want: want, ID: metrixIDHash(id), Kind: metrixKindMessage})
		})
		return at, err
	}, nil
}
