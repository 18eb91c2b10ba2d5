package deliveries_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/deliveries"
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
		recs, err := deliveries.Lookup(ctx, e.NC, stream, e.Topo.Prefix(), id)
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
