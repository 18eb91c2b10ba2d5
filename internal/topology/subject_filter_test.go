package topology_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

func TestFilterSubjects(t *testing.T) {
	one := topology.New(config.Default().Streams)
	s := config.Default().Streams
	s.Partitions = 3
	three := topology.New(s)
	byType := func(types ...string) topology.EventFilter { return topology.EventFilter{ByType: true, Types: types} }
	tests := []struct {
		name string
		topo topology.Topology
		i    int
		f    topology.EventFilter
		want []string
	}{
		{"the whole stream", one, 0, topology.EventFilter{}, []string{"chapar.events.>"}},
		{"the whole partition", three, 2, topology.EventFilter{}, []string{"chapar.events.2.>"}},
		{"types and the direct subjects", one, 0, byType(envelope.TypeTrack, "com.shop.order.shipped"),
			[]string{"chapar.events.chapar.direct.>", "chapar.events.com.shop.order.shipped", "chapar.events.track"}},
		{"in a partition", three, 1, byType(envelope.TypeTrack),
			[]string{"chapar.events.1.chapar.direct.>", "chapar.events.1.track"}},
		{"two types of one subject, once", one, 0, byType(envelope.TypeTrack, "track"),
			[]string{"chapar.events.chapar.direct.>", "chapar.events.track"}},
		{"no types: destinations only", one, 0, byType(), []string{"chapar.events.chapar.direct.>"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.topo.FilterSubjects(tt.i, tt.f); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("FilterSubjects = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestSubjectMatches(t *testing.T) {
	tests := []struct {
		filter, subject string
		want            bool
	}{
		{"chapar.events.track", "chapar.events.track", true},
		{"chapar.events.track", "chapar.events.identify", false},
		{"chapar.events.track", "chapar.events.track.x", false},
		{"chapar.events.>", "chapar.events.track", true},
		{"chapar.events.>", "chapar.events", false},
		{"chapar.events.chapar.direct.>", "chapar.events.chapar.direct.track", true},
		{"chapar.events.chapar.direct.>", "chapar.events.chapar", false},
		{"chapar.events.*.track", "chapar.events.3.track", true},
		{"chapar.events.*.track", "chapar.events.3.identify", false},
	}
	for _, tt := range tests {
		if got := topology.SubjectMatches(tt.filter, tt.subject); got != tt.want {
			t.Errorf("SubjectMatches(%q, %q) = %v, want %v", tt.filter, tt.subject, got, tt.want)
		}
	}
	if !topology.Reads(nil, "anything") {
		t.Error("no filter reads every subject")
	}
	if topology.Reads([]string{"a.b", "a.c"}, "a.d") || !topology.Reads([]string{"a.b", "a.c"}, "a.c") {
		t.Error("Reads: any of the filters")
	}
}

// What nats-server (the version go.mod pins) does to a durable consumer's
// position when its filter subjects are updated: it keeps it. Events the
// consumer passed over under the old filter are not delivered, even above
// its ack floor; events it had not reached yet are read under the new
// filter, and so is everything stored after the update. So a widening
// delivers every event stored from the new owner's bind on (docs/design.md,
// "Subject filters").
func TestFilterUpdateKeepsTheConsumersPosition(t *testing.T) {
	js, topo := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	narrow := topology.ConsumerSettings{AckWait: 30 * time.Second, MaxAckPending: 100,
		Filter: topology.EventFilter{ByType: true, Types: []string{envelope.TypeIdentify}}}
	cons, err := topo.EnsureSink(ctx, js, "s1", narrow)
	if err != nil {
		t.Fatal(err)
	}
	publish := func(typ, id string) {
		t.Helper()
		msg := nats.NewMsg(topo.EventSubject(typ))
		msg.Data = []byte(id)
		if _, err := js.PublishMsg(ctx, msg, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	fetch := func(c jetstream.Consumer, n int) []string {
		t.Helper()
		b, err := c.Fetch(n, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for m := range b.Messages() {
			out = append(out, string(m.Data()))
		}
		return out
	}
	publish(envelope.TypeIdentify, "i1")
	publish(envelope.TypeTrack, "t1") // passed over: the filter excludes it
	publish(envelope.TypeIdentify, "i2")
	publish(envelope.TypeTrack, "t2") // not reached yet
	if got := fetch(cons.Events[0], 2); !reflect.DeepEqual(got, []string{"i1", "i2"}) {
		t.Fatalf("before the update: %q", got) // none acked: the ack floor is below t1
	}
	wide := narrow
	wide.Filter.Types = []string{envelope.TypeIdentify, envelope.TypeTrack}
	cons, err = topo.EnsureSink(ctx, js, "s1", wide)
	if err != nil {
		t.Fatal(err)
	}
	if got := topology.FiltersOf(cons.Events[0].CachedInfo().Config); !reflect.DeepEqual(got, topo.FilterSubjects(0, wide.Filter)) {
		t.Fatalf("filter after the update: %q", got)
	}
	publish(envelope.TypeTrack, "t3")
	if got := fetch(cons.Events[0], 10); !reflect.DeepEqual(got, []string{"t2", "t3"}) {
		t.Errorf("after widening: %q, want t2 (not reached before) and t3 (stored after), not t1 (passed over)", got)
	}
}

// An upgrade turns a whole-stream consumer (one filter subject) into one
// reading some types (several), and filter_by_route: false turns it back:
// both are updates of the consumer in place.
func TestFilterChangesBothWays(t *testing.T) {
	js, topo := start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	byType := topology.EventFilter{ByType: true, Types: []string{envelope.TypeTrack}}
	for _, f := range []topology.EventFilter{{}, byType, {}, byType} {
		cons, err := topo.EnsureSink(ctx, js, "s1", topology.ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 10, Filter: f})
		if err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
		info, err := cons.Events[0].Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := topology.FiltersOf(info.Config), topo.FilterSubjects(0, f); !reflect.DeepEqual(got, want) {
			t.Errorf("%+v: the consumer reads %q, want %q", f, got, want)
		}
	}
}
