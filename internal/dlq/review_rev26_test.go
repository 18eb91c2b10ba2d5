package dlq_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
)

// Review rev26. The fix for a full store (TestPurgeFreesAFullStore) knows
// one refusal: the server's own storage spent (10023, insufficient
// resources). A deployment whose account has a JetStream quota (operator
// mode, a hosted NATS, an accounts block with jetstream limits) is full at
// its quota, and the server refuses the tombstone with 10002 ("resource
// limits exceeded for account"): isFull does not know it, and the purge
// that is to free the account's storage fails on its first record, as
// before the fix.
func TestReviewRev26PurgeFreesAnAccountAtItsJetStreamQuota(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "nats.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(`
listen: "127.0.0.1:-1"
no_sys_acc: true
jetstream { store_dir: %q }
accounts {
  APP { jetstream { max_file: 4MB, max_mem: 64MB }, users [ { user: app, password: app } ] }
}
`, filepath.Join(dir, "js"))), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL(), nats.UserInfo("app", "app"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	topo := topology.New(config.Default().Streams)
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	w := dlq.NewWriter(js, topo)
	data := bytes.Repeat([]byte("x"), 100<<10)
	written := 0
	var full error
	for i := range 200 {
		_, err := w.Write(ctx, &dlq.Record{Sink: "chabok", Reason: outcome.VendorRejected, Status: 400,
			EventID: fmt.Sprintf("e-%d", i), EventType: "chapar.track", Origin: uint64(i + 1), LastAttempt: time.Now(), Data: data})
		if err != nil {
			full = err
			break
		}
		written++
	}
	if full == nil {
		t.Fatalf("wrote %d dead letters without reaching the account's quota", written)
	}
	// The account's other streams take what is left: producers publish
	// small events until the events stream is refused too, which leaves
	// the account within a few bytes of its quota.
	small := 0
	for i := range 1_000_000 {
		if _, err := js.Publish(ctx, fmt.Sprintf("chapar.events.t.%d", i%10), []byte("{}")); err != nil {
			t.Logf("account at its quota after %d dead letters (%v) and %d small events: %v", written, full, small, err)
			break
		}
		small++
	}
	n, err := dlq.NewStore(js, topo).Purge(ctx, dlq.Filter{Sink: "chabok"})
	if err != nil || n != written {
		t.Errorf("purge of an account at its JetStream quota: purged %d of %d, error %v; the dead letters cannot be purged to free it", n, written, err)
	}
	stream, err := js.Stream(ctx, topo.DeadLetterStream())
	if err != nil {
		t.Fatal(err)
	}
	if b := stream.CachedInfo().State.Bytes; b > 1<<20 {
		t.Errorf("the dead-letter stream still holds %d bytes after the purge", b)
	}
}

// purgeAfterRequeue is the JetStream a replay runs on: right after the
// replay's requeue is stored, another operator's purge (a terminal, or the
// console) removes the same dead letters.
type purgeAfterRequeue struct {
	jetstream.JetStream
	retryPrefix string
	purge       func()
	done        bool
}

func (j *purgeAfterRequeue) PublishMsg(ctx context.Context, m *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	ack, err := j.JetStream.PublishMsg(ctx, m, opts...)
	if err == nil && !j.done && strings.HasPrefix(m.Subject, j.retryPrefix) {
		j.done = true
		j.purge()
	}
	return ack, err
}

// Review rev26. A replay counts only the records it removed (the fix for
// TestConcurrentReplaysCountOnlyWhatEachReplayed), and says why that is
// right for a purge too: "it was purged after being read here (then it is
// queued, once, all the same)". Queued, the event is delivered again; yet
// the replay reports it not replayed, does not follow it (the console's
// job, chapar.ops.replay_done), and the purge reports it purged: no report
// says the event went back to its sink.
func TestReviewRev26AReplayRacingAPurgeCountsTheEventItQueued(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if _, err := e.Topo.EnsureSink(ctx, e.JS, "chabok", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 100}); err != nil {
		t.Fatal(err)
	}
	if _, err := dlq.NewWriter(e.JS, e.Topo).Write(ctx, &dlq.Record{Sink: "chabok", Reason: outcome.VendorRejected, Status: 400,
		EventID: "e-1", EventType: "chapar.track", Origin: 1, LastAttempt: time.Now(), Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	var purged int
	var purgeErr error
	wrapped := &purgeAfterRequeue{JetStream: e.JS, retryPrefix: strings.TrimSuffix(e.Topo.RetryDueSubject("chabok"), "chabok"),
		purge: func() { purged, purgeErr = dlq.NewStore(e.JS, e.Topo).Purge(ctx, dlq.Filter{Sink: "chabok"}) }}
	followed := 0
	res, err := dlq.NewStore(wrapped, e.Topo).Replay(ctx, dlq.Filter{Sink: "chabok"}, dlq.ReplayOptions{Replayed: func(*dlq.Record) { followed++ }})
	if err != nil || purgeErr != nil {
		t.Fatal(err, purgeErr)
	}
	if !wrapped.done {
		t.Fatal("the replay queued nothing")
	}
	retries, err := e.JS.Stream(ctx, e.Topo.RetriesStream())
	if err != nil {
		t.Fatal(err)
	}
	queued := retries.CachedInfo().State.Msgs
	if queued != 1 {
		t.Fatalf("%d replays queued, want 1", queued)
	}
	if res.Replayed != 1 || followed != 1 {
		t.Errorf("the replay queued the event (delivered again), but reports %d replayed and followed %d; the purge reports %d purged",
			res.Replayed, followed, purged)
	}
}
