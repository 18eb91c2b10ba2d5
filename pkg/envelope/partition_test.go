package envelope_test

import (
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

// The vectors docs/envelope.md gives producers in other languages: a change
// here moves users between partitions and breaks their order.
func TestPartitionVectors(t *testing.T) {
	for _, c := range []struct {
		key                 string
		fnv                 uint32 // FNV-1a 32 of the key's UTF-8 bytes, for reference
		n2, n3, n8, n64, n1 int
	}{
		{"", 0x811c9dc5, 1, 1, 5, 5, 0},
		{"a", 0xe40c292c, 0, 1, 4, 44, 0},
		{"user-42", 0x026073ab, 1, 0, 3, 43, 0},
		{"user-43", 0x01607218, 0, 1, 0, 24, 0},
		{"0192f3a4-0001", 0x9474ae11, 1, 2, 1, 17, 0},
		{"کاربر-۴۲", 0x4bfa115e, 0, 1, 6, 30, 0},
	} {
		for _, nc := range []struct{ n, want int }{{1, c.n1}, {2, c.n2}, {3, c.n3}, {8, c.n8}, {64, c.n64}} {
			if got := envelope.Partition(c.key, nc.n); got != nc.want {
				t.Errorf("Partition(%q, %d) = %d, want %d (FNV-1a %#08x mod %d)", c.key, nc.n, got, nc.want, c.fnv, nc.n)
			}
		}
	}
}

// The key is the partitionkey extension, else the subject, else the id.
func TestPartitionKeyPrecedence(t *testing.T) {
	for _, c := range []struct {
		name string
		env  envelope.Envelope
		want string
	}{
		{"extension wins", envelope.Envelope{ID: "e1", Subject: "user-42", Extensions: map[string]string{"partitionkey": "order-7"}}, "order-7"},
		{"subject", envelope.Envelope{ID: "e1", Subject: "user-42"}, "user-42"},
		{"empty extension is absent", envelope.Envelope{ID: "e1", Subject: "user-42", Extensions: map[string]string{"partitionkey": ""}}, "user-42"},
		{"id", envelope.Envelope{ID: "e1"}, "e1"},
	} {
		if got := c.env.PartitionKey(); got != c.want {
			t.Errorf("%s: PartitionKey() = %q, want %q", c.name, got, c.want)
		}
		// UserKey is the same key without the id fallback.
		if user := c.env.UserKey(); user != c.want && !(user == "" && c.want == c.env.ID) {
			t.Errorf("%s: UserKey() = %q with PartitionKey %q", c.name, user, c.want)
		}
	}
}

// One partition is the layout without partitions, subject for subject.
func TestPartitionSubject(t *testing.T) {
	for _, c := range []struct {
		typ           string
		partition, of int
		want          string
	}{
		{envelope.TypeTrack, 0, 1, "chapar.events.track"},
		{envelope.TypeTrack, 0, 0, "chapar.events.track"},
		{envelope.TypeTrack, 2, 3, "chapar.events.2.track"},
		{envelope.TypePurchase, 0, 3, "chapar.events.0.purchase"},
	} {
		if got := envelope.PartitionSubject("chapar", c.typ, c.partition, c.of); got != c.want {
			t.Errorf("PartitionSubject(%s, %d of %d) = %q, want %q", c.typ, c.partition, c.of, got, c.want)
		}
	}
}

// A Publisher puts each event in its key's partition: every event of one
// user in one stream, whatever its type.
func TestPublisherSubjectFollowsTheKey(t *testing.T) {
	one := envelope.NewPublisher(nil)
	three := envelope.NewPublisher(nil, envelope.WithPartitions(3), envelope.WithSubjectPrefix("acme"))
	for _, c := range []struct {
		env       envelope.Envelope
		one, want string
	}{
		{envelope.Envelope{ID: "e1", Type: envelope.TypeTrack, Subject: "user-42"}, "chapar.events.track", "acme.events.0.track"},
		{envelope.Envelope{ID: "e2", Type: envelope.TypePurchase, Subject: "user-42"}, "chapar.events.purchase", "acme.events.0.purchase"},
		{envelope.Envelope{ID: "0192f3a4-0001", Type: envelope.TypeTrack}, "chapar.events.track", "acme.events.2.track"},
	} {
		if got := one.Subject(&c.env); got != c.one {
			t.Errorf("%s without partitions: %q, want %q", c.env.ID, got, c.one)
		}
		if got := three.Subject(&c.env); got != c.want {
			t.Errorf("%s over 3 partitions: %q, want %q", c.env.ID, got, c.want)
		}
	}
}

// An event carrying destinations is published on the direct subject of its
// type, in the partition its key chooses; the direct space starts no
// type's subject, so a consumer reading some types never reads another's
// events through it (docs/envelope.md, "Destinations").
func TestDirectSubject(t *testing.T) {
	for _, c := range []struct {
		typ           string
		partition, of int
		want          string
	}{
		{envelope.TypeTrack, 0, 1, "chapar.events.chapar.direct.track"},
		{envelope.TypeTrack, 2, 3, "chapar.events.2.chapar.direct.track"},
		{"com.shop.order.shipped", 0, 1, "chapar.events.chapar.direct.com.shop.order.shipped"},
		{"chapar", 1, 2, "chapar.events.1.chapar.direct.chapar"},
	} {
		if got := envelope.DirectSubject("chapar", c.typ, c.partition, c.of); got != c.want {
			t.Errorf("DirectSubject(%q, %d, %d) = %q, want %q", c.typ, c.partition, c.of, got, c.want)
		}
	}
	// No type the contract allows has a subject in the direct space.
	for _, typ := range append(envelope.Types(), "chapar", "chapar-direct", "direct", "com.chapar.direct") {
		if err := envelope.CheckType(typ); err != nil {
			t.Fatalf("%q: %v", typ, err)
		}
		if s := envelope.Subject("chapar", typ); strings.HasPrefix(s, "chapar.events."+envelope.DirectToken+".") || s == "chapar.events."+envelope.DirectToken {
			t.Errorf("type %q's subject %s is in the direct space", typ, s)
		}
	}
	if envelope.CheckType(envelope.DirectToken+".track") == nil {
		t.Error("a custom type beginning with chapar.direct is accepted")
	}

	plain, err := envelope.New(envelope.TypeTrack, "test", map[string]any{"name": "x", "user": map[string]any{"id": "u1"}})
	if err != nil {
		t.Fatal(err)
	}
	named := *plain
	named.Destinations = "crm, kenar"
	blank := *plain
	blank.Destinations = " "
	for _, c := range []struct {
		env  *envelope.Envelope
		want string
	}{
		{plain, "chapar.events.track"},
		{&named, "chapar.events.chapar.direct.track"},
		{&blank, "chapar.events.track"}, // routing reads no destinations in it
	} {
		if got := envelope.SubjectOf("chapar", c.env, 1); got != c.want {
			t.Errorf("SubjectOf(destinations %q) = %q, want %q", c.env.Destinations, got, c.want)
		}
	}
}
