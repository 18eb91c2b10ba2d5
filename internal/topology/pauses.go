package topology

import (
	"context"
	"fmt"

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
