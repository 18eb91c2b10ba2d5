package sinks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Where the Metrix gateway keeps each user's record (metrix_times.go).

// metrixTimeStore runs fn on the union of the records of users (a user's
// customUserId and metrixUserId each name one: Metrix may drop on either)
// and stores the result under each of them, atomically per record. fn may
// run more than once (a lost race); only its last run's result counts.
type metrixTimeStore interface {
	reserve(ctx context.Context, users []string, fn func(b *metrixBook)) error
}

// metrixUserKeys are the record names of a request's user: one per id it
// gives, under the app (two sinks sending to one Metrix app share them).
// Hashed: a key-value key allows few characters, and a user id any.
func metrixUserKeys(app string, body metrixGatewayBody) []string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(app))
	prefix := fmt.Sprintf("%08x", h.Sum32())
	name := func(kind, id string) string {
		sum := sha256.Sum256([]byte(id))
		return prefix + "." + kind + "." + hex.EncodeToString(sum[:16])
	}
	var keys []string
	if body.CustomUserID != "" {
		keys = append(keys, name("c", body.CustomUserID))
	}
	if body.MetrixUserID != "" {
		keys = append(keys, name("m", body.MetrixUserID))
	}
	return keys
}

// memTimes keeps the records in this process: a sink that was never
// attached to JetStream (a test calling Deliver directly). It cannot see
// another process's messages.
type memTimes struct {
	mu    sync.Mutex
	users map[string]metrixSlots
}

// memTimesUsers bounds memTimes: past it, one user (any) is forgotten.
const memTimesUsers = 10_000

func (m *memTimes) reserve(_ context.Context, users []string, fn func(b *metrixBook)) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.users == nil {
		m.users = map[string]metrixSlots{}
	}
	var r metrixSlots
	for _, u := range users {
		r.merge(m.users[u])
	}
	r = r.written(fn)
	for _, u := range users {
		if _, ok := m.users[u]; !ok && len(m.users) >= memTimesUsers {
			for x := range m.users {
				delete(m.users, x)
				break
			}
		}
		m.users[u] = r
	}
	return nil
}

// kvTimes keeps the records in a JetStream key-value bucket, one entry per
// user id, changed by compare-and-set: replicas racing for one user retry
// on the newer record. Within the process, one user's reservations take
// turns (a striped lock), so only replicas race. The process remembers
// the last record it wrote or read per user with its revision, and writes
// against it without reading first: a write is one round trip, and a
// record another replica changed meanwhile fails it (a lost race), read
// afresh.
type kvTimes struct {
	kv    jetstream.KeyValue
	locks [64]sync.Mutex

	mu    sync.Mutex
	known map[string]kvRecord
}

// kvRecord is a record as last seen, at its revision.
type kvRecord struct {
	rev   uint64
	slots metrixSlots
}

// kvKnownMax bounds what kvTimes remembers: past it, one user (any) is
// forgotten, to be read again.
const kvKnownMax = 10_000

// metrixTimesBucket is the bucket's name after the streams' prefix.
const metrixTimesBucket = "METRIX_TIMES"

// metrixTimesTTL is how long a user's record outlives its last message:
// the horizon of a record, with room.
const metrixTimesTTL = time.Hour

// kvTimesTimeout bounds one reservation, its races included.
const kvTimesTimeout = 5 * time.Second

func openKVTimes(ctx context.Context, st State) (*kvTimes, error) {
	storage := jetstream.FileStorage
	if st.Memory {
		storage = jetstream.MemoryStorage
	}
	kv, err := st.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:      st.Prefix + "_" + metrixTimesBucket,
		Description: "Chapar: the times each user's Metrix gateway messages took (Metrix drops a user's second message at one time)",
		History:     1,
		TTL:         metrixTimesTTL,
		Replicas:    max(st.Replicas, 1),
		Storage:     storage,
	})
	if err != nil {
		return nil, fmt.Errorf("metrix times bucket: %w", err)
	}
	return &kvTimes{kv: kv}, nil
}

func (k *kvTimes) reserve(ctx context.Context, users []string, fn func(b *metrixBook)) error {
	if len(users) == 0 {
		return nil
	}
	h := fnv.New32a()
	_, _ = h.Write([]byte(users[0]))
	lock := &k.locks[h.Sum32()%uint32(len(k.locks))]
	lock.Lock()
	defer lock.Unlock()
	ctx, cancel := context.WithTimeout(ctx, kvTimesTimeout)
	defer cancel()
	for race := 0; ; race++ {
		err := k.try(ctx, users, fn)
		if !errors.Is(err, errLostRace) {
			return err
		}
		// Another replica changed the record between our read and write:
		// read it again, after a pause that grows with the contention.
		select {
		case <-ctx.Done():
			return fmt.Errorf("metrix times: %d lost races: %w", race+1, ctx.Err())
		case <-time.After(time.Duration(min(race, 20)) * time.Millisecond):
		}
	}
}

var errLostRace = errors.New("metrix times: record changed meanwhile")

func (k *kvTimes) try(ctx context.Context, users []string, fn func(b *metrixBook)) error {
	revs := make([]uint64, len(users))
	var r metrixSlots
	for i, u := range users {
		if rec, ok := k.recall(u); ok {
			revs[i] = rec.rev
			r.merge(rec.slots)
			continue
		}
		e, err := k.kv.Get(ctx, u)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("metrix times: read: %w", err)
		}
		got, err := decodeMetrixSlots(e.Value())
		if err != nil {
			// Written by no version of Chapar that reads it: start over
			// rather than stop delivering to the user.
			got = nil
		}
		revs[i] = e.Revision()
		r.merge(got)
	}
	r = r.written(fn)
	value := r.encode()
	for i, u := range users {
		var rev uint64
		var err error
		if revs[i] == 0 {
			rev, err = k.kv.Create(ctx, u, value)
		} else {
			rev, err = k.kv.Update(ctx, u, value, revs[i])
		}
		if lostRace(err) {
			// A record written before this one (users[:i]) now holds
			// times no message will take: gaps, never collisions.
			k.forget(users...)
			return errLostRace
		}
		if err != nil {
			k.forget(users...)
			return fmt.Errorf("metrix times: write: %w", err)
		}
		k.remember(u, kvRecord{rev: rev, slots: r})
	}
	return nil
}

func (k *kvTimes) recall(user string) (kvRecord, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	rec, ok := k.known[user]
	return rec, ok
}

// remember keeps a record as written; r is not changed after (each try
// builds its own).
func (k *kvTimes) remember(user string, rec kvRecord) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.known == nil {
		k.known = map[string]kvRecord{}
	}
	if _, ok := k.known[user]; !ok && len(k.known) >= kvKnownMax {
		for x := range k.known {
			delete(k.known, x)
			break
		}
	}
	k.known[user] = rec
}

func (k *kvTimes) forget(users ...string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, u := range users {
		delete(k.known, u)
	}
}

// lostRace is Create's or Update's answer when the record moved on (one
// code on a single-replica bucket, another on a replicated one).
func lostRace(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
