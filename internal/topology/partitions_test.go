package topology_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/embedded"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// jetStream starts an embedded JetStream server with no streams yet.
func jetStream(t *testing.T) (*server.Server, jetstream.JetStream) {
	t.Helper()
	s, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return s, js
}

func layout(partitions int) topology.Topology {
	cfg := config.Default().Streams
	cfg.Partitions = partitions
	return topology.New(cfg)
}

func timeout(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// streamOf returns, per stream, the ids of the messages it holds.
func idsByStream(t *testing.T, ctx context.Context, js jetstream.JetStream, streams []string) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, name := range streams {
		st, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
			m, err := st.GetMsg(ctx, seq)
			if err != nil {
				t.Fatalf("%s #%d: %v", name, seq, err)
			}
			out[name] = append(out[name], m.Header.Get(jetstream.MsgIDHeader))
		}
	}
	return out
}

// With three partitions there are three events streams on disjoint
// subjects, a sink has its consumer on each, and a Publisher puts every
// event of one key in that key's partition, in publish order: the order
// per user that one consumer per partition can keep.
func TestPartitionedLayoutKeepsEachKeyInOneStream(t *testing.T) {
	_, js := jetStream(t)
	ctx := timeout(t)
	topo := layout(3)
	for range 2 { // idempotent: every replica runs it
		if err := topo.Ensure(ctx, js); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"CHAPAR_EVENTS_0", "CHAPAR_EVENTS_1", "CHAPAR_EVENTS_2"}
	if got := topo.EventsStreams(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("streams %v, want %v", got, want)
	}
	cons, err := topo.EnsureSink(ctx, js, "s1", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(cons.Events) != 3 {
		t.Fatalf("%d events consumers, want one per partition", len(cons.Events))
	}
	for i, c := range cons.Events {
		info := c.CachedInfo()
		if info.Stream != want[i] || info.Config.FilterSubject != fmt.Sprintf("chapar.events.%d.>", i) || info.Name != "sink-s1" {
			t.Errorf("consumer %d: %s on %s filtering %s", i, info.Name, info.Stream, info.Config.FilterSubject)
		}
	}

	pub := envelope.NewPublisher(js, envelope.WithPartitions(3))
	wantIDs := map[string][]string{}
	for n := range 4 {
		for u := range 12 {
			env, err := envelope.New(envelope.TypeTrack, "test", envelope.Track{Name: "x", User: envelope.User{ID: "u"}},
				envelope.WithSubject(fmt.Sprintf("user-%d", u)), envelope.WithID(fmt.Sprintf("e-%d-%d", u, n)))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pub.Publish(ctx, env); err != nil {
				t.Fatal(err)
			}
			s := want[envelope.Partition(env.PartitionKey(), 3)]
			wantIDs[s] = append(wantIDs[s], env.ID)
		}
	}
	got := idsByStream(t, ctx, js, want)
	for _, s := range want {
		if len(wantIDs[s]) == 0 {
			t.Fatalf("no key fell in %s: the test keys do not cover every partition", s)
		}
		if strings.Join(got[s], " ") != strings.Join(wantIDs[s], " ") {
			t.Errorf("%s holds %v, want %v (its keys' events, in publish order)", s, got[s], wantIDs[s])
		}
	}

	// Idle sees every partition: an event pending in one makes the sink busy.
	if idle, err := topo.Idle(ctx, js, []string{"s1"}); err != nil || idle {
		t.Fatalf("Idle = %v, %v with 48 events pending", idle, err)
	}
	for _, c := range cons.Events {
		batch, err := c.Fetch(100, jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	if idle, err := topo.Idle(ctx, js, []string{"s1"}); err != nil || !idle {
		t.Fatalf("Idle = %v, %v after every partition was acked", idle, err)
	}
}

// nats-server's subject mapping partition(n, token) puts a key in the same
// partition as envelope.Partition: a producer that cannot compute it can
// publish to an unpartitioned subject with the key as a token and let the
// server map it (docs/envelope.md).
func TestServerMappingAgreesWithPartition(t *testing.T) {
	s, js := jetStream(t)
	ctx := timeout(t)
	if err := s.GlobalAccount().AddMapping("chapar.in.*.*", "chapar.events.{{partition(3,2)}}.{{wildcard(1)}}"); err != nil {
		t.Fatal(err)
	}
	topo := layout(3)
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	// A consumer, as a dispatcher makes at start (before v3, interest
	// retention kept events only for an existing consumer).
	if _, err := topo.EnsureSink(ctx, js, "s1", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 100}); err != nil {
		t.Fatal(err)
	}
	keys := []string{"user-42", "user-43", "a", "0192f3a4-0001", "کاربر-۴۲", "u1", "u2", "u3", "u4", "u5"}
	wantIDs := map[string][]string{}
	for _, k := range keys {
		id := "id-" + k
		if _, err := js.Publish(ctx, "chapar.in.track."+k, []byte(`{}`), jetstream.WithMsgID(id)); err != nil {
			t.Fatalf("publish key %q: %v", k, err)
		}
		s := topo.EventsStreamOf(envelope.Partition(k, 3))
		wantIDs[s] = append(wantIDs[s], id)
	}
	got := idsByStream(t, ctx, js, topo.EventsStreams())
	for _, s := range topo.EventsStreams() {
		if strings.Join(got[s], " ") != strings.Join(wantIDs[s], " ") {
			t.Errorf("the server mapped %v to %s, envelope.Partition says %v", got[s], s, wantIDs[s])
		}
	}
}

// Changing the partition count while streams of the old count exist is
// refused, naming the key, the streams, the count they were made for and
// what they hold: growing (old keys would move while their events are
// pending) as much as shrinking. The documented procedure (drain, stop
// producers, remove the old streams) then works.
func TestChangingPartitionsIsRefusedUntilTheOldStreamsAreRemoved(t *testing.T) {
	for _, c := range []struct {
		from, to int
		named    []string // every old stream, with its count
	}{
		{1, 3, []string{"CHAPAR_EVENTS (1 partition, 1 deliveries pending, 1 events kept)"}},
		{3, 1, []string{"CHAPAR_EVENTS_0 (3 partitions, 1 deliveries pending, 1 events kept)", "CHAPAR_EVENTS_1 (3 partitions, 0 deliveries pending, 0 events kept)", "CHAPAR_EVENTS_2 (3 partitions, 0 deliveries pending, 0 events kept)"}},
		// 2 → 3 keeps the names _0 and _1: only their recorded count
		// tells them apart from the new layout's.
		{2, 3, []string{"CHAPAR_EVENTS_0 (2 partitions, 1 deliveries pending, 1 events kept)", "CHAPAR_EVENTS_1 (2 partitions, 0 deliveries pending, 0 events kept)"}},
		{3, 2, []string{"CHAPAR_EVENTS_0 (3 partitions, 1 deliveries pending, 1 events kept)", "CHAPAR_EVENTS_1 (3 partitions, 0 deliveries pending, 0 events kept)", "CHAPAR_EVENTS_2 (3 partitions, 0 deliveries pending, 0 events kept)"}},
	} {
		t.Run(fmt.Sprintf("%d to %d", c.from, c.to), func(t *testing.T) {
			_, js := jetStream(t)
			ctx := timeout(t)
			old, next := layout(c.from), layout(c.to)
			if err := old.Ensure(ctx, js); err != nil {
				t.Fatal(err)
			}
			cons, err := old.EnsureSink(ctx, js, "s1", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 100})
			if err != nil {
				t.Fatal(err)
			}
			// One pending event in partition 0: what a change must not strand.
			if _, err := js.Publish(ctx, strings.TrimSuffix(old.PartitionSubjects(0), ">")+"track", []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			// The consumer counts it as pending a moment after the publish.
			for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
				info, err := cons.Events[0].Info(ctx)
				if err == nil && info.NumPending == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the event never showed as pending: %v", err)
				}
			}

			err = next.Ensure(ctx, js)
			want := fmt.Sprintf("streams.partitions: is %d, but events streams of another partition count exist: %s;", c.to, strings.Join(c.named, ", "))
			if err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "docs/scaling.md") {
				t.Fatalf("changing with the old streams present: %v\nwant a refusal containing %q", err, want)
			}

			// The procedure: drain with the old count, then remove its streams.
			batch, err := cons.Events[0].Fetch(1, jetstream.FetchMaxWait(2*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			for m := range batch.Messages() {
				if err := m.DoubleAck(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if idle, err := old.Idle(ctx, js, []string{"s1"}); err != nil || !idle {
				t.Fatalf("not idle after draining: %v, %v", idle, err)
			}
			// Drained, the stream still keeps its event (limits retention):
			// the refusal tells drained from not by what is pending.
			drained := fmt.Sprintf("%s (%s, 0 deliveries pending, 1 events kept)", old.EventsStreamOf(0), map[bool]string{true: "1 partition", false: fmt.Sprint(c.from, " partitions")}[c.from == 1])
			if err := next.Ensure(ctx, js); err == nil || !strings.Contains(err.Error(), drained) {
				t.Fatalf("after draining: %v\nwant a refusal naming %q", err, drained)
			}
			for _, s := range old.EventsStreams() {
				if err := js.DeleteStream(ctx, s); err != nil {
					t.Fatal(err)
				}
			}
			if err := next.Ensure(ctx, js); err != nil {
				t.Fatalf("after the old streams were removed: %v", err)
			}
			if _, err := next.EnsureSink(ctx, js, "s1", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 100}); err != nil {
				t.Fatal(err)
			}
			if err := next.Ensure(ctx, js); err != nil {
				t.Fatalf("a second start with the new count: %v", err)
			}
		})
	}
}

// Streams created before their count was recorded carry no metadata.
// CHAPAR_EVENTS is one partition by its name; suffixed streams are
// accepted only if they are exactly the new count's (and then get the
// count recorded), since 0..N-1 of a smaller count look the same.
func TestStreamsWithoutARecordedCount(t *testing.T) {
	for _, c := range []struct {
		name     string
		existing []string
		to       int
		refusal  string // empty: accepted
	}{
		{"single stream, still one partition", []string{"CHAPAR_EVENTS"}, 1, ""},
		{"single stream, now three", []string{"CHAPAR_EVENTS"}, 3, "CHAPAR_EVENTS (1 partition, 0 deliveries pending, 0 events kept)"},
		{"three streams, still three", []string{"CHAPAR_EVENTS_0", "CHAPAR_EVENTS_1", "CHAPAR_EVENTS_2"}, 3, ""},
		{"two streams, now three", []string{"CHAPAR_EVENTS_0", "CHAPAR_EVENTS_1"}, 3,
			"CHAPAR_EVENTS_0 (unknown partition count, 0 deliveries pending, 0 events kept), CHAPAR_EVENTS_1 (unknown partition count, 0 deliveries pending, 0 events kept)"},
		{"three streams, now two", []string{"CHAPAR_EVENTS_0", "CHAPAR_EVENTS_1", "CHAPAR_EVENTS_2"}, 2,
			"CHAPAR_EVENTS_0 (unknown partition count, 0 deliveries pending, 0 events kept), CHAPAR_EVENTS_1 (unknown partition count, 0 deliveries pending, 0 events kept), CHAPAR_EVENTS_2 (unknown partition count, 0 deliveries pending, 0 events kept)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, js := jetStream(t)
			ctx := timeout(t)
			for _, name := range c.existing {
				subj := "chapar.events.>"
				if i := strings.LastIndexByte(name, '_'); name != "CHAPAR_EVENTS" {
					subj = "chapar.events." + name[i+1:] + ".>"
				}
				if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{subj}, Retention: jetstream.InterestPolicy}); err != nil {
					t.Fatal(err)
				}
			}
			topo := layout(c.to)
			err := topo.Ensure(ctx, js)
			if c.refusal != "" {
				if err == nil || !strings.Contains(err.Error(), "exist: "+c.refusal+";") {
					t.Fatalf("Ensure = %v, want a refusal naming %s", err, c.refusal)
				}
				return
			}
			if err != nil {
				t.Fatalf("Ensure = %v, want the existing streams adopted", err)
			}
			for _, name := range topo.EventsStreams() {
				st, err := js.Stream(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				if got := st.CachedInfo().Config.Metadata[topology.PartitionsMetadata]; got != fmt.Sprint(c.to) {
					t.Errorf("%s records %q partitions after Ensure, want %d", name, got, c.to)
				}
			}
		})
	}
}

// An origin names a delivery across partitions: the same sequence in two
// partition streams is two origins, and one partition is today's origin.
func TestOriginIsUniqueAcrossPartitions(t *testing.T) {
	for _, c := range []struct {
		stream string
		seq    uint64
		part   int
	}{
		{"CHAPAR_EVENTS", 7, 0},
		{"CHAPAR_EVENTS_0", 7, 0},
		{"CHAPAR_EVENTS_1", 7, 1},
		{"CHAPAR_EVENTS_63", 7, 63},
		{"ACME_CHAPAR_EVENTS_2", 1 << 40, 2},
	} {
		o := topology.Origin(c.stream, c.seq)
		if p, seq := topology.SplitOrigin(o); p != c.part || seq != c.seq {
			t.Errorf("Origin(%s, %d) = %d splits into (%d, %d), want (%d, %d)", c.stream, c.seq, o, p, seq, c.part, c.seq)
		}
	}
	if topology.Origin("CHAPAR_EVENTS", 7) != 7 {
		t.Error("one partition changed the origin: dead letters written before partitions would not de-duplicate")
	}
	if topology.Origin("CHAPAR_EVENTS_1", 7) == topology.Origin("CHAPAR_EVENTS_2", 7) {
		t.Error("sequence 7 of two partitions has one origin: their retries would overwrite each other")
	}
}

// An origin that cannot hold its sequence or partition is refused, never
// encoded: a sequence past 2^56 would run into the partition bits, and a
// partition past 255 used to yield the bare sequence, partition 0's origin.
func TestOriginRefusesWhatDoesNotFit(t *testing.T) {
	for _, c := range []struct {
		stream string
		seq    uint64
		want   uint64
		err    string // empty: no error
	}{
		{"CHAPAR_EVENTS", 1<<56 - 1, 1<<56 - 1, ""},
		{"CHAPAR_EVENTS_255", 1, 255<<56 | 1, ""},
		{"CHAPAR_RETRIES", 9, 9, ""},
		{"CHAPAR_EVENTS", 1 << 56, 0, "past 2^56"},
		{"CHAPAR_EVENTS_1", 1<<56 + 5, 0, "past 2^56"},
		{"CHAPAR_EVENTS_256", 5, 0, `"256" is not a partition from 0 to 255`},
		{"CHAPAR_EVENTS_x", 5, 0, `"x" is not a partition`},
	} {
		got, err := topology.OriginOf(c.stream, c.seq)
		switch {
		case c.err == "" && (err != nil || got != c.want):
			t.Errorf("OriginOf(%s, %d) = %d, %v; want %d", c.stream, c.seq, got, err, c.want)
		case c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)):
			t.Errorf("OriginOf(%s, %d) = %d, %v; want an error saying %q", c.stream, c.seq, got, err, c.err)
		}
		if c.err != "" {
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("Origin(%s, %d) returned instead of panicking: a wrong origin merges two events' retries", c.stream, c.seq)
					}
				}()
				topology.Origin(c.stream, c.seq)
			}()
		}
	}
}

// On a 3-node cluster with replicated streams, SpreadLeaders puts each
// partition's stream leader, and its sinks' consumer leaders, on a server
// of its own: the point of partitions is several leaders doing the work.
func TestSpreadLeadersGivesEachPartitionItsOwnServer(t *testing.T) {
	e := testenv.NewCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	// The cluster starts with the one-partition layout; the procedure to
	// change the count removes its (empty) events stream.
	if err := e.JS.DeleteStream(ctx, e.Topo.EventsStream()); err != nil {
		t.Fatal(err)
	}
	cfg := e.Streams
	cfg.Partitions = 3
	topo := topology.New(cfg)
	testenv.Eventually(t, 20*time.Second, "streams and consumers created", func() bool {
		if err := topo.Ensure(ctx, e.JS); err != nil {
			return false
		}
		for _, s := range []string{"a", "b"} {
			if _, err := topo.EnsureSink(ctx, e.JS, s, topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 100}); err != nil {
				return false
			}
		}
		return true
	})
	leaders := func() (streams, consumers []string) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		for _, name := range topo.EventsStreams() {
			st, err := e.JS.Stream(ctx, name)
			if err != nil || st.CachedInfo().Cluster == nil {
				return nil, nil
			}
			streams = append(streams, st.CachedInfo().Cluster.Leader)
			for _, s := range []string{"a", "b"} {
				c, err := e.JS.Consumer(ctx, name, topology.SinkConsumer(s))
				if err != nil || c.CachedInfo().Cluster == nil {
					return nil, nil
				}
				consumers = append(consumers, c.CachedInfo().Cluster.Leader)
			}
		}
		return streams, consumers
	}
	var streams, consumers []string
	testenv.Eventually(t, 30*time.Second, "one server per partition", func() bool {
		_ = topo.SpreadLeaders(ctx, e.JS, []string{"a", "b"}) // as every dispatcher start does; a move may still be under way
		streams, consumers = leaders()
		if len(streams) != 3 || slices.Contains(streams, "") || len(slices.Compact(slices.Sorted(slices.Values(streams)))) != 3 {
			return false
		}
		for i, l := range consumers {
			if l != streams[i/2] {
				return false
			}
		}
		return true
	})
	t.Logf("stream leaders %v, consumer leaders %v", streams, consumers)
}
