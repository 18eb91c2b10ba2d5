package topology

// Which dispatchers run which sinks: each running dispatcher keeps a
// presence record in the replicas bucket, so `dispatcher sinks remove`
// can tell a sink still run somewhere even when that replica pulls
// nothing (its breaker open, paused by a Retry-After, fenced): waiting
// pull requests (SinkFootprint.Consuming) show only the replicas pulling.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

const (
	// ReplicaEvery is how often a running dispatcher writes its presence
	// record again.
	ReplicaEvery = 10 * time.Second
	// ReplicaTTL is the replicas bucket's max_age: a dispatcher that died
	// without deleting its record (kill -9, a lost host) stops counting
	// ReplicaTTL after its last write. Three writes' worth, so one or two
	// failed writes (a leader election) do not make a live replica vanish.
	ReplicaTTL = 3 * ReplicaEvery
	// readReplicasTimeout bounds reading every presence record.
	readReplicasTimeout = 10 * time.Second
)

// Replica is one running dispatcher's presence record.
type Replica struct {
	ID      string    `json:"id"` // a uuid per process
	Host    string    `json:"host"`
	PID     int       `json:"pid"`
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	// Sinks are the sinks the dispatcher runs: bound, or binding.
	Sinks []string `json:"sinks"`
	// Fences are the fences it bound its sinks with, by sink: absent
	// until it has bound them, and in records of versions before it
	// (OrphanedFence counts either as possibly holding any).
	Fences map[string]string `json:"fences,omitempty"`
	// Written is when the record was written, on the dispatcher's clock.
	Written time.Time `json:"written"`
}

// String names a replica for an operator: where it runs and since when.
func (r Replica) String() string {
	return fmt.Sprintf("%s pid %d (since %s, version %s, id %s)", r.Host, r.PID, r.Started.UTC().Format(time.RFC3339), r.Version, r.ID)
}

// ReplicasBucket is the key-value bucket of the presence records: one key
// per running dispatcher (its id), the latest value only.
func (t Topology) ReplicasBucket() string { return t.stream + "_REPLICAS" }

// EnsureReplicas creates or updates the replicas bucket and returns it. It
// is idempotent; every dispatcher runs it at start, outside Ensure's path:
// a dispatcher that cannot write its record delivers all the same.
func (t Topology) EnsureReplicas(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	storage := jetstream.FileStorage
	if t.cfg.Storage == "memory" {
		storage = jetstream.MemoryStorage
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       t.ReplicasBucket(),
		Description:  "Chapar: which dispatchers run which sinks (presence records, rewritten every 10 s)",
		History:      1,
		TTL:          ReplicaTTL,
		MaxValueSize: 64 * 1024, // a record lists the replica's sinks
		Storage:      storage,
		Replicas:     t.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("topology: replicas bucket %s: %w", t.ReplicasBucket(), err)
	}
	return kv, nil
}

// PutReplica writes a dispatcher's presence record.
func PutReplica(ctx context.Context, kv jetstream.KeyValue, r Replica) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("topology: presence record: %w", err)
	}
	if _, err := kv.Put(ctx, r.ID, b); err != nil {
		return fmt.Errorf("topology: write presence record %s: %w", r.ID, err)
	}
	return nil
}

// DeleteReplica removes a dispatcher's presence record at its clean
// shutdown.
func DeleteReplica(ctx context.Context, kv jetstream.KeyValue, id string) error {
	if err := kv.Delete(ctx, id); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("topology: delete presence record %s: %w", id, err)
	}
	return nil
}

// ReplicasRunning lists the live presence records that name sink. No
// bucket means no dispatcher of this version has run yet: none.
func (t Topology) ReplicasRunning(ctx context.Context, js jetstream.JetStream, sink string) ([]Replica, error) {
	all, err := t.Replicas(ctx, js)
	if err != nil {
		return nil, err
	}
	var out []Replica
	for _, r := range all {
		if slices.Contains(r.Sinks, sink) {
			out = append(out, r)
		}
	}
	return out, nil
}

// Replicas lists every live presence record, oldest first.
func (t Topology) Replicas(ctx context.Context, js jetstream.JetStream) ([]Replica, error) {
	// The watch below waits for the server's answer on ctx alone.
	ctx, cancel := context.WithTimeout(ctx, readReplicasTimeout)
	defer cancel()
	kv, err := js.KeyValue(ctx, t.ReplicasBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("topology: replicas bucket %s: %w", t.ReplicasBucket(), err)
	}
	// A watch of every key hands the current records over, then a nil
	// entry: only that says the list is whole. A partial list (ctx ended
	// first) must not pass for "nobody runs it".
	w, err := kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("topology: read presence records: %w", err)
	}
	defer func() { _ = w.Stop() }()
	var out []Replica
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return nil, fmt.Errorf("topology: read presence records: %w", ctx.Err())
		}
		if e == nil {
			break
		}
		var r Replica
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			return nil, fmt.Errorf("topology: presence record %s: %w", e.Key(), err)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Replica) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out, nil
}
