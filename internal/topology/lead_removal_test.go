package topology_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/topology"
)

// Whether a sink can be removed without a lead's check lost: only a lead
// is held back; the only lead while other sinks exist never goes, nor one
// whose own sweep is not done; another lead lets it go once it has read
// everything, or once a lead made in place of it by a config with every
// other sink that does not lead itself recorded its sweep and did it.
func TestLeadRemovalCheck(t *testing.T) {
	tk := func(by string, sinks ...string) topology.Takeover { return topology.Takeover{By: by, Sinks: sinks} }
	for _, c := range []struct {
		name string
		r    topology.LeadRemoval
		// refused is a part of the refusal, "" when it may go.
		refused string
	}{
		{"not a lead", topology.LeadRemoval{Pending: 9, Others: map[string]bool{"b": false}}, ""},
		{"the last sink", topology.LeadRemoval{Lead: true, Pending: 9, Others: map[string]bool{}}, ""},
		{"the only lead", topology.LeadRemoval{Lead: true, Others: map[string]bool{"b": false}}, "no other sink is a lead yet"},
		{"the only lead, a takeover by a sink not marked", topology.LeadRemoval{Lead: true, Pending: 9,
			Others: map[string]bool{"b": false}, Takeovers: []topology.Takeover{tk("b", "b")}}, "no other sink is a lead yet"},
		{"drained, another lead", topology.LeadRemoval{Lead: true, Others: map[string]bool{"b": false, "y": true}}, ""},
		{"pending, another set's lead", topology.LeadRemoval{Lead: true, Pending: 1,
			Others: map[string]bool{"b": false, "y": true}}, "no sink has been made the lead in place of it"},
		{"unacked, another set's lead", topology.LeadRemoval{Lead: true, AckPending: 1,
			Others: map[string]bool{"b": false, "y": true}}, "1 it has not acked"},
		{"pending, the other set's lead swept in place of it", topology.LeadRemoval{Lead: true, Pending: 1,
			Others: map[string]bool{"b": false, "y": true}, Takeovers: []topology.Takeover{tk("y", "y")}}, "y, whose config lacked b"},
		{"pending, its set's next lead swept in place of it", topology.LeadRemoval{Lead: true, Pending: 1,
			Others: map[string]bool{"b": true, "y": true}, Takeovers: []topology.Takeover{tk("y", "y"), tk("b", "b")}}, ""},
		{"pending, one set: the new lead swept in place of it", topology.LeadRemoval{Lead: true, Pending: 5,
			Others: map[string]bool{"b": true, "c": false}, Takeovers: []topology.Takeover{tk("b", "b", "c")}}, ""},
		{"pending, the new lead's config lacked a sink", topology.LeadRemoval{Lead: true, Pending: 5,
			Others: map[string]bool{"b": true, "c": false}, Takeovers: []topology.Takeover{tk("b", "b")}}, "b, whose config lacked c"},
		{"pending, the lead that swept is no longer one", topology.LeadRemoval{Lead: true, Pending: 5,
			Others: map[string]bool{"b": false, "y": true}, Takeovers: []topology.Takeover{tk("b", "b")}}, "no sink has been made the lead in place of it"},
		{"its own sweep not done", topology.LeadRemoval{Lead: true, Sweeping: 1,
			Others: map[string]bool{"y": true}}, "has not finished checking the backlog"},
		{"its own sweep not done, the last sink", topology.LeadRemoval{Lead: true, Sweeping: 1, Others: map[string]bool{}}, ""},
		{"its own sweep not done, a takeover", topology.LeadRemoval{Lead: true, Sweeping: 1, Pending: 3,
			Others: map[string]bool{"y": true}, Takeovers: []topology.Takeover{tk("y", "y")}}, "has not finished checking the backlog"},
		{"pending, the lead that swept is gone", topology.LeadRemoval{Lead: true, Pending: 5,
			Others: map[string]bool{"y": true}, Takeovers: []topology.Takeover{tk("b", "b", "y")}}, "no sink has been made the lead in place of it"},
		{"pending, the new lead's sweep not done", topology.LeadRemoval{Lead: true, Pending: 5,
			Others: map[string]bool{"b": true, "c": false}, Takeovers: []topology.Takeover{tk("b", "b", "c")}, Unswept: map[string]int{"b": 1}},
			"have not finished checking its backlog (b (1 partitions"},
		{"pending, one new lead's sweep not done, another's done", topology.LeadRemoval{Lead: true, Pending: 5,
			Others: map[string]bool{"b": true, "y": true}, Takeovers: []topology.Takeover{tk("b", "b"), tk("y", "y")}, Unswept: map[string]int{"b": 2}}, ""},
		{"pending, a sweep not done and a config short", topology.LeadRemoval{Lead: true, Pending: 5,
			Others: map[string]bool{"b": true, "c": false, "y": true}, Takeovers: []topology.Takeover{tk("b", "b", "c"), tk("y", "y")},
			Unswept: map[string]int{"b": 1}}, "y, whose config lacked c"},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.r.Sink = "a"
			err := c.r.Check()
			switch {
			case c.refused == "" && err != nil:
				t.Errorf("refused: %v", err)
			case c.refused != "" && err == nil:
				t.Errorf("removable, want a refusal saying %q", c.refused)
			case c.refused != "" && (!strings.Contains(err.Error(), c.refused) || !strings.Contains(err.Error(), "sink a ")):
				t.Errorf("refusal %q, want it to name sink a and say %q", err, c.refused)
			}
		})
	}
}

// The takeover records of a sink, both those of leads made in place of it
// and those of it made a lead in place of others, go with its floors: a
// sink added again under the name is vouched for by no one, and vouches
// for no one. Others' records stay.
func TestTakeoversGoWithTheSinksFloors(t *testing.T) {
	_, js := jetStream(t)
	ctx := timeout(t)
	topo := layout(1)
	kv, err := topo.EnsureFloors(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	write := func(old, by string) {
		t.Helper()
		if err := topo.WriteTakeover(ctx, kv, old, topology.Takeover{By: by, Sinks: []string{by, "c"}, At: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	write("a", "b") // b leads in place of a
	write("a", "y") // and y, another set's
	write("z", "a") // a led in place of z
	write("z", "b")
	got, err := topo.Takeovers(ctx, kv, "a")
	if err != nil || len(got) != 2 || got[0].By != "b" || got[1].By != "y" || !slices.Equal(got[0].Sinks, []string{"b", "c"}) {
		t.Fatalf("takeovers of a: %+v %v, want b's and y's", got, err)
	}
	if err := topo.DeleteFloors(ctx, js, "a"); err != nil {
		t.Fatal(err)
	}
	for old, want := range map[string][]string{"a": nil, "z": {"b"}} {
		got, err := topo.Takeovers(ctx, kv, old)
		if err != nil {
			t.Fatal(err)
		}
		var by []string
		for _, tk := range got {
			by = append(by, tk.By)
		}
		if !slices.Equal(by, want) {
			t.Errorf("takeovers of %s once a is removed: %v, want %v", old, by, want)
		}
	}
}

// A takeover record names every sink of its config, up to 63 bytes each:
// one of 17 long-named sinks is recorded, in a floors bucket made with the
// 1 KiB values of before too (the next bind raises them), and read back.
func TestATakeoverOfManyLongNamedSinksIsRecorded(t *testing.T) {
	_, js := jetStream(t)
	ctx := timeout(t)
	topo := layout(1)
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: topo.FloorsBucket(), History: 1, MaxValueSize: 1024}); err != nil {
		t.Fatal(err)
	}
	kv, err := topo.EnsureFloors(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	var sinks []string
	for i := range 17 {
		sinks = append(sinks, fmt.Sprintf("sink-%02d-%s", i, strings.Repeat("x", 55)))
	}
	if err := topo.WriteTakeover(ctx, kv, "a", topology.Takeover{By: sinks[0], Sinks: sinks, At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	got, err := topo.Takeovers(ctx, kv, "a")
	if err != nil || len(got) != 1 || !slices.Equal(got[0].Sinks, sinks) {
		t.Fatalf("takeovers of a: %+v %v, want the one written, naming its 17 sinks", got, err)
	}
}

// A bind of another config that resumes a lead's sweep takes the sinks
// its config lacks out of that lead's takeovers (the rest of the sweep
// does not check for them), and adds none; others' takeovers stay.
func TestNarrowTakeoversKeepsTheResumingConfigsSinks(t *testing.T) {
	_, js := jetStream(t)
	ctx := timeout(t)
	topo := layout(1)
	kv, err := topo.EnsureFloors(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		old string
		tk  topology.Takeover
	}{
		{"a", topology.Takeover{By: "b", Sinks: []string{"b", "c", "d"}}},
		{"z", topology.Takeover{By: "b", Sinks: []string{"b", "d"}}},
		{"a", topology.Takeover{By: "y", Sinks: []string{"y", "c"}}},
	} {
		if err := topo.WriteTakeover(ctx, kv, w.old, w.tk); err != nil {
			t.Fatal(err)
		}
	}
	if err := topo.NarrowTakeovers(ctx, kv, "b", []string{"b", "d", "e"}); err != nil {
		t.Fatal(err)
	}
	for old, want := range map[string]map[string][]string{"a": {"b": {"b", "d"}, "y": {"y", "c"}}, "z": {"b": {"b", "d"}}} {
		got, err := topo.Takeovers(ctx, kv, old)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("takeovers of %s: %+v, want %v", old, got, want)
		}
		for _, tk := range got {
			if !slices.Equal(tk.Sinks, want[tk.By]) {
				t.Errorf("takeover of %s by %s: sinks %v, want %v", old, tk.By, tk.Sinks, want[tk.By])
			}
		}
	}
}
