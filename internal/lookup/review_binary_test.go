package lookup_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/lookup"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Docs review: README ("Binary mode works too") and docs/envelope.md
// ("Modes") take an event published in binary mode (the attributes as
// ce-* headers, data as the body), and the dispatcher delivers it. But
// `dispatcher events show` reads the stored message with envelope.Parse,
// the structured form only, so for every sink with no record of such an
// event it says "unknown: the event could not be read from its stream":
// a sink the routes do not send it to is not "not_routed", and a paused
// sink's waiting event is not "paused". Seen against `dispatcher run`
// with configs/local.yaml: `nats pub chapar.events.track -H ce-…` then
// `dispatcher events show <id>` shows kenar as unknown.
func TestReviewShowABinaryModeEvent(t *testing.T) {
	e := testenv.New(t)
	sinks := []config.Sink{e.Sink("first", emulator.Chabok, nil, nil), e.Sink("gateway", emulator.MetrixGateway,
		map[string]string{"order_paid": "aewqd"}, nil)}
	routes := []config.Route{
		{Types: []string{envelope.TypePurchase}, Sinks: []string{"first"}},
		{Types: []string{envelope.TypeTrack}, Sinks: []string{"gateway"}},
	}
	d := e.Start(sinks, routes)
	cfg := e.Config(sinks, routes)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	publishBinary := func(id, user string) {
		t.Helper()
		m := nats.NewMsg(e.Topo.EventSubjectFor(envelope.TypeTrack, ""))
		m.Header.Set("ce-specversion", "1.0")
		m.Header.Set("ce-id", id)
		m.Header.Set("ce-source", "shop-api")
		m.Header.Set("ce-type", envelope.TypeTrack)
		m.Header.Set("ce-subject", user)
		m.Header.Set("Content-Type", "application/json")
		m.Data = []byte(`{"name":"order_paid","user":{"id":"` + user + `"}}`)
		if _, err := e.JS.PublishMsg(ctx, m, jetstream.WithMsgID(id)); err != nil {
			t.Fatal(err)
		}
	}
	show := func(id string) map[string]lookup.Sink {
		t.Helper()
		rep, err := lookup.Show(ctx, e.JS, cfg, id)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]lookup.Sink{}
		for _, s := range rep.Sinks {
			out[s.Sink] = s
		}
		return out
	}

	publishBinary("binary-delivered", "u1")
	testenv.Eventually(t, 20*time.Second, "the binary-mode event delivered", func() bool {
		return d.Tally.DeliveredTo("gateway") == 1 && e.Idle("first", "gateway")
	})
	testenv.Eventually(t, 5*time.Second, "the binary-mode event shown delivered", func() bool {
		return show("binary-delivered")["gateway"].State == lookup.Delivered
	})
	if s := show("binary-delivered")["first"]; s.State != lookup.NotRouted {
		t.Errorf("binary-mode event, sink first (routes send it only purchases): %s (%s), want not_routed", s.State, s.Why)
	}

	if err := e.Topo.SetOperatorPause(ctx, e.JS, "gateway", topology.OperatorPause{Paused: true, At: time.Now(), By: "test"}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "paused", func() bool { return d.Tally.Paused("gateway") })
	publishBinary("binary-waiting", "u2")
	if s := show("binary-waiting")["gateway"]; s.State != lookup.Paused {
		t.Errorf("binary-mode event for the paused sink: %s (%s), want paused", s.State, s.Why)
	}
}
