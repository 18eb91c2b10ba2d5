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

// ReserveMetrixTimes is ReserveMetrixTime for a request naming several
// record names (users), its messages (ids, in order) wanting ms want;
// known is what the store remembers of a name: its messages' milliseconds
// in the record's order.
func ReserveMetrixTimes(ctx context.Context, js jetstream.JetStream, prefix string) (
	reserve func(ctx context.Context, users, ids []string, want int64) ([]int64, error), known func(user string) []int64, err error,
) {
	kv, err := openKVTimes(ctx, State{JS: js, Prefix: prefix, Replicas: 1, Memory: true})
	if err != nil {
		return nil, nil, err
	}
	reserve = func(ctx context.Context, users, ids []string, want int64) ([]int64, error) {
		var ats []int64
		err := kv.reserve(ctx, users, func(b *metrixBook) {
			ats = ats[:0]
			for i, id := range ids {
				ats = append(ats, b.take(metrixSlot{Want: want, Recv: int64(i), ID: metrixIDHash(id), Kind: metrixKindMessage}))
			}
		})
		return ats, err
	}
	known = func(user string) []int64 {
		rec, _ := kv.recall(user)
		var ats []int64
		for _, s := range rec.slots {
			ats = append(ats, s.At)
		}
		return ats
	}
	return reserve, known, nil
}
