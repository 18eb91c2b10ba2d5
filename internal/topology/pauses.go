package topology

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// PausesBucket is the key-value bucket where a sink's Retry-After pause is
// shared by every dispatcher of the deployment: one key per sink (its
// name), the latest value only. A vendor throttles the account, not one
// process, so a pause one replica was given holds for all of them
// (internal/dispatch, pause.go).
func (t Topology) PausesBucket() string { return t.stream + "_PAUSES" }

// EnsurePauses creates or updates the pauses bucket and returns it. It is
// idempotent, so every dispatcher runs it at start; not in Ensure's path:
// a dispatcher whose bucket is not ready yet (a cluster still forming)
// delivers meanwhile, honouring its own pauses.
//
// No TTL: a value carries its own end (the pause's until, the probe's
// lease), so an old value is inert, and a bucket-wide age could delete a
// pause longer than it (max_retry_after has no upper bound). There is one
// key per sink name, so the bucket stays a few hundred bytes.
func (t Topology) EnsurePauses(ctx context.Context, js jetstream.JetStream) (jetstream.KeyValue, error) {
	storage := jetstream.FileStorage
	if t.cfg.Storage == "memory" {
		storage = jetstream.MemoryStorage
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket:       t.PausesBucket(),
		Description:  "Chapar: each sink's Retry-After pause, shared by every dispatcher",
		History:      1,
		MaxValueSize: 1024,
		Storage:      storage,
		Replicas:     t.cfg.Replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("topology: pauses bucket %s: %w", t.PausesBucket(), err)
	}
	return kv, nil
}

// An operator's pause (dispatcher sinks pause) lives in the same bucket as
// the Retry-After pauses, under its own key per sink (OperatorPauseKey):
// every dispatcher already reads that bucket before its first pull and
// watches it, so a replica learns an operator's pause the way it learns a
// vendor's, started before or after it. Its own key, not a field of the
// Retry-After record: that record is rewritten by every probe claim (a
// compare-and-set race among replicas), and an operator's write must
// neither join that race nor be undone by it. Sink names are subject
// tokens (no dots), so an operator key never names a sink's Retry-After
// record.
const operatorPausePrefix = "operator."

// OperatorPauseKey is the key of a sink's operator pause in PausesBucket.
func OperatorPauseKey(sink string) string { return operatorPausePrefix + sink }

// OperatorPauseSink is the sink an operator pause key is of, and whether
// key is one.
func OperatorPauseSink(key string) (string, bool) {
	return strings.CutPrefix(key, operatorPausePrefix)
}

// OperatorPause is a sink's operator pause record. Resuming writes
// Paused false rather than deleting the key, so a replica whose watch was
// broken while it happened reads it among the current values when the
// watch is made again (a deleted key is not among them). It has no end:
// it holds until resumed.
type OperatorPause struct {
	Paused bool      `json:"paused"`
	At     time.Time `json:"at"`
	// By says who wrote it: "cli" or "console" and the host.
	By string `json:"by,omitempty"`
}

// SetOperatorPause records a sink paused or resumed, for every dispatcher
// of the deployment, creating the bucket if need be: a sink no dispatcher
// runs yet is paused from its first start.
func (t Topology) SetOperatorPause(ctx context.Context, js jetstream.JetStream, sink string, p OperatorPause) error {
	kv, err := t.EnsurePauses(ctx, js)
	if err != nil {
		return err
	}
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, OperatorPauseKey(sink), raw); err != nil {
		return fmt.Errorf("topology: record the pause of sink %s: %w", sink, err)
	}
	return nil
}

// OperatorPauses reads every sink's operator pause record (resumed ones
// too), by sink. A deployment without the bucket has none.
func (t Topology) OperatorPauses(ctx context.Context, js jetstream.JetStream) (map[string]OperatorPause, error) {
	out := map[string]OperatorPause{}
	kv, err := js.KeyValue(ctx, t.PausesBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return out, nil
	}
	if err != nil {
		return nil, fmt.Errorf("topology: pauses bucket %s: %w", t.PausesBucket(), err)
	}
	// A watch hands the current records over, then a nil entry: only
	// that says the list is whole (a partial one must not read as "not
	// paused").
	w, err := kv.WatchFiltered(ctx, []string{operatorPausePrefix + ">"}, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("topology: read the operator pauses: %w", err)
	}
	defer func() { _ = w.Stop() }()
	for {
		var e jetstream.KeyValueEntry
		select {
		case e = <-w.Updates():
		case <-ctx.Done():
			return nil, fmt.Errorf("topology: read the operator pauses: %w", ctx.Err())
		}
		if e == nil {
			break
		}
		var p OperatorPause
		if err := json.Unmarshal(e.Value(), &p); err != nil {
			return nil, fmt.Errorf("topology: %s in %s is not a pause record: %w", e.Key(), t.PausesBucket(), err)
		}
		sink, _ := OperatorPauseSink(e.Key())
		out[sink] = p
	}
	return out, nil
}

// DeletePauses deletes a sink's operator pause and its Retry-After record:
// a sink removed and added again later starts neither paused by an
// operator of long ago nor behind an old vendor pause. A deployment
// without the bucket has nothing to delete.
func (t Topology) DeletePauses(ctx context.Context, js jetstream.JetStream, sink string) error {
	kv, err := js.KeyValue(ctx, t.PausesBucket())
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("topology: pauses bucket %s: %w", t.PausesBucket(), err)
	}
	for _, key := range []string{OperatorPauseKey(sink), sink} {
		if err := kv.Purge(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
			return fmt.Errorf("topology: delete pause %s: %w", key, err)
		}
	}
	return nil
}
