package dispatch_test

// Any CloudEvents type (issue 21, "Any event type"): the webhook sink takes
// a producer's own types with their data as written; a vendor sink that
// has no call for one dead-letters it unsupported_event and goes on.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dispatch"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

const shippedType = "com.shop.order.shipped"

// shippedData is a team's own data: nesting, a number no float64 holds,
// null, non-ASCII text; compact, as a structured body carries it.
const shippedData = `{"order":{"id":"A-1001","total":12345678901234567890.000001,"lines":[{"sku":"x-1","qty":2}],"coupon":null},"note":"ارسال شد","tags":["fast",true,3]}`

// shipped is the envelope, not validated here: the dispatcher judges it.
func shipped(id string) *envelope.Envelope {
	return &envelope.Envelope{SpecVersion: envelope.SpecVersion, ID: id, Source: "shop-api", Type: shippedType,
		Subject: "user-42", DataContentType: envelope.ContentTypeJSON, Data: json.RawMessage(shippedData)}
}

func TestCustomTypeRoutedByTypeReachesTheWebhookIntact(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	hook := e.Sink("hook", emulator.Webhook, nil, nil)
	d := e.Start([]config.Sink{hook}, []config.Route{{Types: []string{shippedType}, Sinks: []string{"hook"}}})
	e.Publish(shipped("ship-1"))
	testenv.Eventually(t, 10*time.Second, "the event delivered to the webhook", func() bool { return d.Tally.DeliveredTo("hook") == 1 })
	reqs := e.Emu.Vendor(emulator.Webhook).Requests()
	if len(reqs) != 1 || reqs[0].Status/100 != 2 {
		t.Fatalf("webhook requests %+v, want one accepted", reqs)
	}
	var got struct {
		ID   string          `json:"id"`
		Type string          `json:"type"`
		Data json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(reqs[0].Body, &got); err != nil {
		t.Fatalf("body %s: %v", reqs[0].Body, err)
	}
	if got.ID != "ship-1" || got.Type != shippedType || string(got.Data) != shippedData {
		t.Errorf("webhook got id %q type %q data\n%s\nwant\n%s", got.ID, got.Type, got.Data, shippedData)
	}
	if n := len(deadLetters(t, e, dlq.Filter{})); n != 0 {
		t.Errorf("%d dead letters, want none", n)
	}
}

// A catch-all route sends the custom type to Chabok too, which has no call
// for it: it is dead-lettered unsupported_event at chabok (not
// invalid_envelope: the event is valid, and the webhook got it), no
// request is made for it, and the tracks before and after it are
// delivered.
func TestCustomTypeToAVendorSinkIsUnsupportedAndTheStreamFlows(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	hook := e.Sink("hook", emulator.Webhook, nil, nil)
	chabok := e.Sink("chabok", emulator.Chabok, nil, nil)
	d := e.Start([]config.Sink{hook, chabok}, []config.Route{
		{Types: []string{shippedType}, Sinks: []string{"hook"}},
		{Sinks: []string{"chabok"}}, // catch-all
	})
	const tracks = 10
	for i := range tracks {
		if i == tracks/2 {
			e.Publish(shipped("ship-1"))
		}
		e.Publish(testenv.Track(t, "order_paid", fmt.Sprintf("u%d", i)))
	}
	testenv.Eventually(t, 10*time.Second, "every track at chabok and the custom event at the webhook", func() bool {
		return d.Tally.DeliveredTo("chabok") == tracks && d.Tally.DeliveredTo("hook") == 1
	})
	var recs []*dlq.Record
	testenv.Eventually(t, 10*time.Second, "the custom event's dead letter at chabok", func() bool {
		recs = deadLetters(t, e, dlq.Filter{})
		return len(recs) > 0
	})
	testenv.Eventually(t, 5*time.Second, "both sinks idle", func() bool { return consumerIdle(t, e, "chabok") && consumerIdle(t, e, "hook") })
	recs = deadLetters(t, e, dlq.Filter{})
	if len(recs) != 1 {
		t.Fatalf("%d dead letters, want 1: %+v", len(recs), recs)
	}
	if r := recs[0]; r.Sink != "chabok" || r.Reason != outcome.UnsupportedEvent || r.EventID != "ship-1" || r.EventType != shippedType {
		t.Errorf("dead letter sink %q reason %q event %q type %q; want chabok unsupported_event ship-1 %s", r.Sink, r.Reason, r.EventID, r.EventType, shippedType)
	}
	for _, r := range e.Emu.Vendor(emulator.Chabok).Requests() {
		if strings.Contains(string(r.Body), "A-1001") {
			t.Errorf("chabok was sent the custom event: %s", r.Body)
		}
	}
}

// With a JSON Schema for its type in the config (data_schemas), an event
// whose data does not match is dead-lettered invalid_envelope, naming
// where; one that matches is delivered.
func TestCustomTypeDataSchema(t *testing.T) {
	t.Parallel() // waits on the server and the vendor, not on the CPU
	e := testenv.New(t)
	hook := e.Sink("hook", emulator.Webhook, nil, nil)
	var schemas map[string]yaml.Node
	if err := yaml.Unmarshal([]byte(`
com.shop.order.shipped:
  type: object
  required: [order]
  properties:
    order: {type: object, required: [id], properties: {id: {type: string}}}
`), &schemas); err != nil {
		t.Fatal(err)
	}
	cfg := e.Config([]config.Sink{hook}, []config.Route{{Types: []string{shippedType}, Sinks: []string{"hook"}}})
	cfg.DataSchemas = schemas
	tally := dispatch.NewTally()
	ready := make(chan struct{})
	disp, err := dispatch.New(cfg, dispatch.Options{Observer: tally, Logger: e.Log, Ready: func() { close(ready) }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- disp.Run(ctx, e.JS) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("dispatcher did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("dispatcher did not start in 30s")
	}
	bad := shipped("ship-bad")
	bad.Data = json.RawMessage(`{"order":{"id":1001}}`)
	e.Publish(bad)
	e.Publish(shipped("ship-ok"))
	testenv.Eventually(t, 10*time.Second, "both events settled", func() bool {
		return tally.DeliveredTo("hook") >= 1 && consumerIdle(t, e, "hook")
	})
	recs := deadLetters(t, e, dlq.Filter{})
	if n := tally.DeliveredTo("hook"); n != 1 || len(recs) != 1 {
		t.Fatalf("%d delivered and %d dead letters, want 1 and 1", n, len(recs))
	}
	if r := recs[0]; r.Reason != outcome.InvalidEnvelope || r.EventID != "ship-bad" || !strings.Contains(r.Error, "/order/id") {
		t.Errorf("dead letter %s %s %q; want invalid_envelope ship-bad naming /order/id", r.Reason, r.EventID, r.Error)
	}
	if reqs := e.Emu.Vendor(emulator.Webhook).Requests(); len(reqs) != 1 || !strings.Contains(string(reqs[0].Body), "ship-ok") {
		t.Errorf("webhook requests %d, want the valid event alone", len(reqs))
	}
}
