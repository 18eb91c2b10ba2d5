package deliveries_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/chapar-dev/chapar/internal/deliveries"
	"github.com/chapar-dev/chapar/internal/jsread"
	"github.com/chapar-dev/chapar/internal/testenv"
)

// Records go to one of 65,536 subjects, not one per event: the server
// keeps state per subject stored (docs/benchmarks.md, "Delivery record
// subjects"). Events whose ids share a bucket share its subject, and a
// lookup tells their records apart by the id each record carries.
func TestEventsSharingABucketShareASubjectAndAreToldApart(t *testing.T) {
	e := testenv.New(t)
	// Three ids in one bucket (the first 16 bits of the id's SHA-256),
	// found by trying: about 2^16 / 2 tries each.
	bucket := func(id string) string {
		sum := sha256.Sum256([]byte(id))
		return hex.EncodeToString(sum[:2])
	}
	ids := []string{"evt-0"}
	for i := 1; len(ids) < 3; i++ {
		if id := fmt.Sprintf("evt-%d", i); bucket(id) == bucket(ids[0]) {
			ids = append(ids, id)
		}
	}
	w := deliveries.NewWriter(e.NC, e.Topo.Prefix())
	at := time.Now().UTC()
	for i, id := range ids {
		w.Record(deliveries.Record{EventID: id, Sink: "chabok", State: deliveries.Retrying, At: at, Attempts: 1, Seq: uint64(i + 1)})
		w.Record(deliveries.Record{EventID: id, Sink: "chabok", State: deliveries.Delivered, At: at, Attempts: 2, Seq: uint64(i + 1)})
		w.Record(deliveries.Record{EventID: id, Sink: "metrix", State: deliveries.Delivered, At: at, Attempts: 1, Seq: uint64(i + 1)})
	}
	if err := e.NC.Flush(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream := e.Topo.DeliveriesStream()
	var subjects uint64
	testenv.Eventually(t, 10*time.Second, "every record stored", func() bool {
		s, err := e.JS.Stream(ctx, stream)
		if err != nil {
			return false
		}
		subjects = s.CachedInfo().State.NumSubjects
		return s.CachedInfo().State.Msgs == uint64(3*len(ids))
	})
	if subjects != 1 {
		t.Errorf("the records of %d events of one bucket are on %d subjects, want 1", len(ids), subjects)
	}
	if want := e.Topo.Prefix() + ".deliveries." + bucket(ids[0]); deliveries.Subject(e.Topo.Prefix(), ids[1]) != want {
		t.Errorf("Subject(%s) = %s, want %s", ids[1], deliveries.Subject(e.Topo.Prefix(), ids[1]), want)
	}
	for i, id := range ids {
		recs, err := deliveries.Lookup(ctx, e.NC, stream, e.Topo.Prefix(), id, jsread.From{})
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) != 2 {
			t.Fatalf("Lookup(%s): %d records, want chabok's and metrix's latest: %+v", id, len(recs), recs)
		}
		for _, r := range recs {
			if r.EventID != id || r.Seq != uint64(i+1) || r.State != deliveries.Delivered {
				t.Errorf("Lookup(%s): %+v", id, r)
			}
		}
		if recs[0].Sink != "chabok" || recs[0].Attempts != 2 || recs[1].Sink != "metrix" {
			t.Errorf("Lookup(%s): want chabok's latest (attempt 2) then metrix's: %+v", id, recs)
		}
	}
}

// Since reads the time a version 7 UUID was made, less an hour for a
// producer's clock ahead of the servers'; any other id reads every
// record.
func TestSinceIsTheTimeInAVersion7ID(t *testing.T) {
	made := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	// A v7 UUID made at a known time: its first 48 bits are the Unix ms.
	ms := made.UnixMilli()
	var u uuid.UUID
	for i := range 6 {
		u[i] = byte(ms >> (8 * (5 - i)))
	}
	u[6], u[8] = 0x70, 0x80 // version 7, RFC 4122 variant
	for _, c := range []struct {
		id   string
		want jsread.From
	}{
		{u.String(), jsread.From{Time: made.Add(-time.Hour)}},
		{uuid.NewString(), jsread.From{}}, // version 4
		{"evt-1", jsread.From{}},
		{"", jsread.From{}},
	} {
		if got := deliveries.Since(c.id); !got.Time.Equal(c.want.Time) || got.Seq != c.want.Seq {
			t.Errorf("Since(%q) = %+v, want %+v", c.id, got, c.want)
		}
	}
}

// A lookup from a time reads the records stored since then: what a list
// or a replay's outcome passes so as not to read a bucket's whole past.
func TestLookupFromATimeReadsTheRecordsSince(t *testing.T) {
	e := testenv.New(t)
	w := deliveries.NewWriter(e.NC, e.Topo.Prefix())
	w.Record(deliveries.Record{EventID: "evt-1", Sink: "chabok", State: deliveries.Retrying, At: time.Now().UTC(), Attempts: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	stream := e.Topo.DeliveriesStream()
	lookup := func(from jsread.From) []deliveries.Record {
		recs, err := deliveries.Lookup(ctx, e.NC, stream, e.Topo.Prefix(), "evt-1", from)
		if err != nil {
			t.Fatal(err)
		}
		return recs
	}
	testenv.Eventually(t, 10*time.Second, "the first record stored", func() bool { return len(lookup(jsread.From{})) == 1 })
	info, err := e.JS.Stream(ctx, stream)
	if err != nil {
		t.Fatal(err)
	}
	after := info.CachedInfo().State.LastTime.Add(time.Millisecond)
	if recs := lookup(jsread.From{Time: after}); len(recs) != 0 {
		t.Errorf("from after the only record: %+v, want none", recs)
	}
	// The embedded server stamps with this process's clock: the second
	// record is stored after the time between.
	testenv.Eventually(t, time.Second, "the clock past the time between", func() bool { return time.Now().After(after) })
	w.Record(deliveries.Record{EventID: "evt-1", Sink: "chabok", State: deliveries.Delivered, At: time.Now().UTC(), Attempts: 2})
	testenv.Eventually(t, 10*time.Second, "the second record found from the time between", func() bool {
		recs := lookup(jsread.From{Time: after})
		return len(recs) == 1 && recs[0].State == deliveries.Delivered
	})
}
