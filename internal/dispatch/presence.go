package dispatch

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/buildinfo"
	"github.com/chapar-dev/chapar/internal/topology"
)

// presence keeps this process's presence record in the replicas bucket
// (topology.Replica): which sinks it runs, rewritten every
// topology.ReplicaEvery, deleted at a clean shutdown. `dispatcher sinks
// remove` refuses while a live record names the sink, whether or not this
// replica pulls at the moment (a shut gate pulls nothing).
//
// It is never in delivery's way: a record that cannot be written is
// logged (once per outage) and tried again at the next round; the
// dispatcher delivers all the same.
type presence struct {
	topo topology.Topology
	js   jetstream.JetStream
	log  *zap.Logger
	rec  topology.Replica

	mu      sync.Mutex
	kv      jetstream.KeyValue // nil until the bucket is bound
	failing bool               // the last write failed (logged once)
}

// presenceTimeout bounds each of the record's broker calls.
const presenceTimeout = 2 * time.Second

func newPresence(id string, sinkNames []string, topo topology.Topology, js jetstream.JetStream, log *zap.Logger) *presence {
	host, err := os.Hostname()
	if err != nil {
		host = "unknown-host"
	}
	return &presence{topo: topo, js: js, log: log, rec: topology.Replica{
		ID: id, Host: host, PID: os.Getpid(), Version: buildinfo.Version(), Started: time.Now().UTC(), Sinks: sinkNames,
	}}
}

// write puts the record, binding the bucket first if need be, and logs a
// failure once per outage. It reports whether the record was written.
func (p *presence) write(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, presenceTimeout)
	defer cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	err := func() error {
		if p.kv == nil {
			kv, err := p.topo.EnsureReplicas(ctx, p.js)
			if err != nil {
				return err
			}
			p.kv = kv
		}
		rec := p.rec
		rec.Written = time.Now().UTC()
		return topology.PutReplica(ctx, p.kv, rec)
	}()
	if err != nil {
		// The bucket may be gone (deleted by an operator): bind it again.
		p.kv = nil
		if !p.failing {
			p.log.Warn("could not write this replica's presence record; delivering all the same, but `dispatcher sinks remove` "+
				"sees this replica only while it pulls", zap.String("bucket", p.topo.ReplicasBucket()), zap.Error(err))
		}
		p.failing = true
		return false
	}
	if p.failing {
		p.log.Info("presence record written again", zap.String("bucket", p.topo.ReplicasBucket()))
	}
	p.failing = false
	return true
}

// bound records the fences the sinks were bound with, and writes the
// record at once: until then a fenced-off replica cannot tell this one
// from one that holds any fence (topology.OrphanedFence).
func (p *presence) bound(ctx context.Context, fences map[string]string) {
	p.mu.Lock()
	p.rec.Fences = fences
	p.mu.Unlock()
	p.write(ctx)
}

// run rewrites the record every topology.ReplicaEvery until ctx ends.
func (p *presence) run(ctx context.Context) {
	t := time.NewTicker(topology.ReplicaEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			p.write(ctx)
		}
	}
}

// remove deletes the record once the dispatcher has stopped working; a
// record left behind (the broker unreachable) expires after
// topology.ReplicaTTL.
func (p *presence) remove() {
	ctx, cancel := context.WithTimeout(context.Background(), presenceTimeout)
	defer cancel()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.kv == nil {
		return
	}
	if err := topology.DeleteReplica(ctx, p.kv, p.rec.ID); err != nil {
		p.log.Warn("could not delete this replica's presence record; it expires by itself",
			zap.Duration("after", topology.ReplicaTTL), zap.Error(err))
	}
}
