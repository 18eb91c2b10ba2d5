package deliveries

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/chapar-dev/chapar/internal/embedded"
)

// A record is published under its event's subject as its JSON, and what
// it makes per record is its subject (its buffer is pooled).
func TestRecordPublishesItsJSONAndMakesOnlyItsSubject(t *testing.T) {
	s, err := embedded.Start(embedded.Options{Listen: "127.0.0.1:0", DataDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	sub, err := nc.SubscribeSync(Subjects("CHAPAR"))
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	w := NewWriter(nc, "CHAPAR")
	r := Record{EventID: "0193f7a2-6c1e-7d3b-9a51-2f4e8c0b1d77", Type: "chapar.track", Sink: "chabok", State: Delivered,
		At: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC), Attempts: 1, Latency: time.Millisecond}
	w.Record(r)
	m, err := sub.NextMsg(5 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if want := string(r.AppendJSON(nil)); m.Subject != Subject("CHAPAR", r.EventID) || string(m.Data) != want || len(m.Header) != 0 {
		t.Errorf("published %s %q (header %v), want %s %q", m.Subject, m.Data, m.Header, Subject("CHAPAR", r.EventID), want)
	}
	if raceEnabled {
		return // sync.Pool drops buffers at random under the race detector
	}
	if n := testing.AllocsPerRun(100, func() { w.Record(r) }); n != 1 {
		t.Errorf("Record allocates %.0f times, want 1 (its subject)", n)
	}
	if w.Failed() != 0 {
		t.Errorf("%d records failed", w.Failed())
	}
}
