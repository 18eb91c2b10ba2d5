package topology

// Where the partitions' leaders sit: spread over the servers, one
// partition's leaders per server as far as they go.

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

// SpreadLeaders moves each partition's leaders (its stream's, and the
// given sinks' consumers' on it) onto one server, a different one per
// partition as far as the servers go. Partitions exist to have several
// leaders, but JetStream picks each new stream's and consumer's leader at
// random among its replicas: three partitions on three servers share a
// stream leader two times in three. Partition i belongs on the i-th of its
// servers in name order: every dispatcher computes the same, so concurrent
// starts agree, and what is already there is left alone. Nothing to do
// with one partition or one replica. A leader that does not move (its
// server is catching up, or offline) is not an error: the layout works,
// only less spread, and the next start tries again.
func (t Topology) SpreadLeaders(ctx context.Context, js jetstream.JetStream, sinks []string) error {
	if t.Partitions() == 1 || t.cfg.Replicas == 1 {
		return nil
	}
	// A group between leaders answers nothing, not even its info: bound
	// each request, so one such group cannot hold the start up.
	bounded := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 5*time.Second) }
	var errs []error
	for i, name := range t.EventsStreams() {
		rctx, cancel := bounded()
		st, err := js.Stream(rctx, name)
		cancel()
		if err != nil {
			errs = append(errs, fmt.Errorf("topology: stream %s: %w", name, err))
			continue
		}
		sc := st.CachedInfo().Cluster
		want, ok := pick(sc, i)
		if !ok {
			continue
		}
		if sc.Leader != want && isCurrent(sc, want) {
			if err := stepDown(ctx, js, "$JS.API.STREAM.LEADER.STEPDOWN."+name, want); err != nil {
				errs = append(errs, fmt.Errorf("topology: move the leader of %s to %s: %w", name, want, err))
			}
		}
		for _, sink := range sinks {
			rctx, cancel := bounded()
			c, err := js.Consumer(rctx, name, SinkConsumer(sink))
			cancel()
			if err != nil {
				errs = append(errs, fmt.Errorf("topology: consumer %s on %s: %w", SinkConsumer(sink), name, err))
				continue
			}
			if cl := c.CachedInfo().Cluster; cl != nil && cl.Leader != want && isCurrent(cl, want) {
				if err := stepDown(ctx, js, "$JS.API.CONSUMER.LEADER.STEPDOWN."+name+"."+SinkConsumer(sink), want); err != nil {
					errs = append(errs, fmt.Errorf("topology: move the leader of %s on %s to %s: %w", SinkConsumer(sink), name, want, err))
				}
			}
		}
	}
	return errors.Join(errs...)
}

// pick is where partition i's leaders belong among its stream's servers
// (false: the stream has no leader yet, so nothing is known).
func pick(c *jetstream.ClusterInfo, i int) (string, bool) {
	if c == nil || c.Leader == "" {
		return "", false
	}
	servers := []string{c.Leader}
	for _, r := range c.Replicas {
		servers = append(servers, r.Name)
	}
	slices.Sort(servers)
	return servers[i%len(servers)], true
}

// isCurrent says whether server is the group's leader or an up-to-date,
// online replica of it: a server that can take over.
func isCurrent(c *jetstream.ClusterInfo, server string) bool {
	if c.Leader == server {
		return true
	}
	for _, r := range c.Replicas {
		if r.Name == server {
			return r.Current && !r.Offline
		}
	}
	return false
}

// stepDown asks a stream's or consumer's leader (api is the step-down
// subject) to hand over to the server named preferred (nats-server 2.11
// and later).
func stepDown(ctx context.Context, js jetstream.JetStream, api, preferred string) error {
	body := fmt.Sprintf(`{"placement":{"preferred":%q}}`, preferred)
	// A group between leaders does not answer: bound the wait.
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	msg, err := js.Conn().RequestWithContext(ctx, api, []byte(body))
	if err != nil {
		return err
	}
	var resp struct {
		Success bool                `json:"success"`
		Error   *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return fmt.Errorf("step-down answer %q: %w", msg.Data, err)
	}
	if resp.Error != nil {
		if strings.Contains(resp.Error.Description, "already leader") {
			return nil // another dispatcher moved it first
		}
		return resp.Error
	}
	return nil
}
