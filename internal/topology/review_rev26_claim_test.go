package topology

import (
	"context"
	"testing"
	"time"
)

// Review rev26, green: a claim (Lost.<sink>.<stream>.<instance>) blocks
// only the loss it names. Losses one after another, a stream deleted and
// made again, and a sink removed and added again are each reported by the
// bind that finds them, whatever claims earlier losses left in the bucket.
func TestReviewRev26EachLossIsReportedWhateverClaimsEarlierLossesLeft(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	js, topo := ensuredJetStream(ctx, t)
	kv, err := topo.EnsureFloors(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	stream := topo.EventsStream()
	var got []Restored
	bind := func(step string, want LostPlan, n int) {
		t.Helper()
		before := len(got)
		if _, err := topo.EnsureSink(ctx, js, "gw", ConsumerSettings{AckWait: 5 * time.Second, MaxAckPending: 10, Floors: kv,
			Lost: func(r Restored) { got = append(got, r) }}); err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if len(got)-before != n {
			t.Fatalf("%s: %d losses reported, want %d", step, len(got)-before, n)
		}
		if n > 0 && got[len(got)-1].Plan != want {
			t.Fatalf("%s: plan %v, want %v", step, got[len(got)-1].Plan, want)
		}
	}
	lose := func() {
		t.Helper()
		if err := js.DeleteConsumer(ctx, stream, SinkConsumer("gw")); err != nil {
			t.Fatal(err)
		}
	}
	bind("new sink", 0, 0)
	lose()
	bind("first loss", LostFromFloor, 1)
	bind("bound again", 0, 0)
	lose()
	bind("second loss", LostFromFloor, 1)
	// The stream deleted and made again: a stream the sink never had a
	// consumer on, then a loss there.
	if err := js.DeleteStream(ctx, stream); err != nil {
		t.Fatal(err)
	}
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	bind("stream made again", LostFromFirst, 1)
	lose()
	bind("loss in the stream made again", LostFromFloor, 1)
	// The sink removed (its consumers and floors, its claims with them)
	// and added again, then lost.
	lose()
	if err := js.DeleteConsumer(ctx, topo.RetriesStream(), RetryConsumer("gw")); err != nil {
		t.Fatal(err)
	}
	if err := topo.DeleteFloors(ctx, js, "gw"); err != nil {
		t.Fatal(err)
	}
	bind("sink added again", 0, 0)
	lose()
	bind("loss of the sink added again", LostFromFloor, 1)
	if a, b := got[0].Instance, got[1].Instance; a.Equal(b) {
		t.Errorf("two losses share the instance %v", a)
	}
}
