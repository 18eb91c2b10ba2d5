package sinks

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

func track(t *testing.T, id, name, userID string, at time.Time) *Delivery {
	t.Helper()
	u := envelope.User{ID: userID, ChabokInstallationID: "inst-" + userID, MetrixUserID: "mx-" + userID}
	return event(t, envelope.TypeTrack, envelope.Track{Name: name, Properties: props(), User: u},
		envelope.WithID(id), envelope.WithTime(at))
}

func TestBuildRefusesABatchTheVendorCannotHonour(t *testing.T) {
	cfg := func(vendor string, n int) config.Sink {
		c := config.Sink{Name: "s", Vendor: vendor, Concurrency: 1, Timeout: time.Second, Batch: &config.Batch{MaxItems: n, MaxWait: time.Millisecond}}
		settings := map[string]map[string]any{
			"chabok": {"app_id": "a", "access_token": "t"},
			"kenar":  {"api_key": "k", "access_token": "t"},
		}[vendor]
		if err := c.Settings.Encode(settings); err != nil {
			t.Fatal(err)
		}
		return c
	}
	if _, err := Build([]config.Sink{cfg("chabok", 1000)}); err != nil {
		t.Errorf("chabok, 1000: %v", err)
	}
	_, err := Build([]config.Sink{cfg("chabok", 1001)})
	if err == nil || !strings.Contains(err.Error(), "sinks[0].batch.max_items: is 1001; chabok takes at most 1000") {
		t.Errorf("chabok, 1001: %v", err)
	}
	_, err = Build([]config.Sink{cfg("kenar", 10)})
	if err == nil || !strings.Contains(err.Error(), "sinks[0].batch: vendor kenar sends one event per request") {
		t.Errorf("kenar: %v", err)
	}
}

func TestChabokBulkIsOneRequestAndABadItemFailsAlone(t *testing.T) {
	emu := emulator.New(emulator.DemoConfig())
	vendor := emu.Vendor(emulator.Chabok)
	srv := httptest.NewServer(vendor)
	defer srv.Close()
	s := newSink(t, "chabok", emulator.BaseURL("chabok", srv.Listener.Addr().String()), nil,
		map[string]any{"app_id": "demoapp", "access_token": "demo-chabok-token"}).(BatchSink)

	var ds []*Delivery
	for i := range 100 {
		ds = append(ds, track(t, fmt.Sprint("e", i), "order_paid", fmt.Sprint("u", i%7), occurred))
	}
	for i, err := range s.DeliverBatch(context.Background(), ds) {
		if err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
	}
	reqs := vendor.Requests()
	if len(reqs) != 1 || reqs[0].Path != "/api/installations/trackBulk" {
		t.Fatalf("%d requests, first %+v", len(reqs), reqs[0])
	}
	var items []chabokEvent
	if err := json.Unmarshal(reqs[0].Body, &items); err != nil || len(items) != 100 || items[3].InstallationID != "inst-u3" {
		t.Fatalf("bulk body: %v %+v", err, items)
	}

	// One poison item among 100: it alone fails, in about 2·log₂(100) requests.
	vendor.Reset()
	vendor.SetFault(emulator.Fault{Status: 400, Code: "INVALID_EVENT", Match: `"eventName":"poison"`})
	ds[41] = track(t, "e41", "poison", "u41", occurred)
	errs := s.DeliverBatch(context.Background(), ds)
	for i, err := range errs {
		if (err != nil) != (i == 41) {
			t.Errorf("item %d: %v", i, err)
		}
	}
	checkOutcome(t, errs[41], &want{reason: ReasonVendorRejected, status: 400, code: "INVALID_EVENT"})
	if n := vendor.Count(0); n > 2*7+1 {
		t.Errorf("%d requests to isolate one bad item of 100", n)
	}
	if got := vendor.Count(200); got == 0 {
		t.Error("nothing accepted")
	}

	// A transient failure fails every item transiently.
	vendor.Reset()
	vendor.SetFault(emulator.Fault{Status: 503, Count: 1})
	for _, err := range s.DeliverBatch(context.Background(), ds[:10]) {
		checkOutcome(t, err, &want{reason: ReasonRetriesExhausted, transient: true, status: 503})
	}
	if vendor.Count(0) != 1 {
		t.Errorf("a 503 was bisected: %d requests", vendor.Count(0))
	}
}

func TestChabokBatchSendsPurchasesAlone(t *testing.T) {
	emu := emulator.New(emulator.DemoConfig())
	vendor := emu.Vendor(emulator.Chabok)
	srv := httptest.NewServer(vendor)
	defer srv.Close()
	s := newSink(t, "chabok", emulator.BaseURL("chabok", srv.Listener.Addr().String()), nil,
		map[string]any{"app_id": "demoapp", "access_token": "demo-chabok-token"}).(BatchSink)
	p := event(t, envelope.TypePurchase, envelope.Purchase{Track: envelope.Track{Name: "buy", User: user},
		Revenue: json.Number("1000"), Currency: "IRR"}, envelope.WithID("p1"))
	n := event(t, envelope.TypeIdentify, envelope.Identify{User: user}, envelope.WithID("n1"))
	errs := s.DeliverBatch(context.Background(), []*Delivery{track(t, "t1", "a", "u", occurred), p, n})
	if errs[0] != nil || errs[1] != nil || errs[2] == nil {
		t.Fatalf("errors %v", errs)
	}
	var paths []string
	for _, r := range vendor.Requests() {
		paths = append(paths, r.Path)
	}
	if strings.Join(paths, " ") != "/api/installations/trackBulk /api/installations/trackPurchase" {
		t.Errorf("requests %v", paths)
	}
}

func TestMetrixGatewayBatchIsOneRequestPerUserInOrder(t *testing.T) {
	emu := emulator.New(emulator.DemoConfig())
	vendor := emu.Vendor(emulator.MetrixGateway)
	srv := httptest.NewServer(vendor)
	defer srv.Close()
	s := newSink(t, "metrix-gateway", emulator.BaseURL("metrix-gateway", srv.Listener.Addr().String()),
		map[string]string{"order_paid": "aewqd", "signup": "signp"},
		map[string]any{"app_id": "demoapp", "api_key": "demo-api-key"}).(BatchSink)

	var ds []*Delivery
	for i := range 30 {
		ds = append(ds, track(t, fmt.Sprint("e", i), "order_paid", fmt.Sprint("u", i%3), occurred.Add(time.Duration(i)*time.Millisecond)))
	}
	// u0 identifies mid-batch: its user message keeps its place.
	id := event(t, envelope.TypeIdentify, envelope.Identify{User: envelope.User{ID: "u0", MetrixUserID: "mx-u0"}},
		envelope.WithID("id-u0"), envelope.WithTime(occurred.Add(time.Second)))
	ds = append(ds[:10], append([]*Delivery{id}, ds[10:]...)...)
	for i, err := range s.DeliverBatch(context.Background(), ds) {
		if err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
	}
	reqs := vendor.Requests()
	if len(reqs) != 3 {
		t.Fatalf("%d requests for 3 users", len(reqs))
	}
	for _, r := range reqs {
		var body metrixGatewayBody
		if err := json.Unmarshal(r.Body, &body); err != nil {
			t.Fatal(err)
		}
		u := body.CustomUserID
		var got []string
		for _, m := range body.Messages {
			got = append(got, m.Type+":"+m.ID)
		}
		var want []string
		for i, d := range ds {
			if d.Event.EventUser().ID == u {
				if want == nil {
					want = append(want, "user:"+ds[i].Event.ID+":user")
				}
				typ := "action"
				if d.Event.Identify != nil {
					typ = "user"
				}
				want = append(want, typ+":"+d.Event.ID)
			}
		}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("user %s: messages\n %v\nwant\n %v", u, got, want)
		}
		if body.Messages[0].Time >= body.Messages[1].Time {
			t.Errorf("user %s registered at %d, not before its first message (%d)", u, body.Messages[0].Time, body.Messages[1].Time)
		}
	}

	// An unknown slug fails its event alone; the user's others go through.
	vendor.Reset()
	bad := track(t, "bad", "unmapped_slug", "u1", occurred)
	s2 := newSink(t, "metrix-gateway", emulator.BaseURL("metrix-gateway", srv.Listener.Addr().String()),
		map[string]string{"order_paid": "aewqd", "unmapped_slug": "zzzzz"},
		map[string]any{"app_id": "demoapp", "api_key": "demo-api-key"}).(BatchSink)
	batch := []*Delivery{ds[0], ds[1], bad, ds[4], ds[7]}
	errs := s2.DeliverBatch(context.Background(), batch)
	for i, err := range errs {
		if (err != nil) != (i == 2) {
			t.Errorf("item %d: %v", i, err)
		}
	}
	checkOutcome(t, errs[2], &want{reason: ReasonVendorRejected, status: 404, code: "EVENT_TYPE_DOES_NOT_EXIST"})
}

// A trackBulk refusal yields the vendor's code as a single track's does,
// for every LoopBack error shape: the dead letter of a batched event says
// what the vendor said. Bulk read its answers with the generic finder
// before, which misses a code given only as a message prefix, an error
// name or a number.
func TestChabokBulkReadsTheVendorsCodeAsASingleTrackDoes(t *testing.T) {
	for _, tt := range []struct {
		name, body, code string
	}{
		{"code", `{"error":{"name":"Error","status":400,"message":"bad","code":"INVALID_EVENT"}}`, "INVALID_EVENT"},
		{"message prefix", `{"error":{"name":"Error","status":400,"message":"INVALID_EVENT: eventName is required"}}`, "INVALID_EVENT"},
		{"error name", `{"error":{"name":"ValidationError","status":400,"message":"The installation instance is not valid."}}`, "ValidationError"},
		{"numeric code", `{"error":{"name":"Error","status":400,"message":"bad","code":4001}}`, "4001"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			s := newSink(t, "chabok", emulator.BaseURL("chabok", srv.Listener.Addr().String()), nil,
				map[string]any{"app_id": "demoapp", "access_token": "demo-chabok-token"}).(BatchSink)
			d := track(t, "e1", "order_paid", "u1", occurred)
			want := &want{reason: ReasonVendorRejected, status: 400, code: tt.code}
			checkOutcome(t, s.Deliver(context.Background(), d), want)
			checkOutcome(t, s.DeliverBatch(context.Background(), []*Delivery{d})[0], want)
		})
	}
}

// oneByOne is a sink that sends one event per request; bulk one that
// batches.
type oneByOne struct{}

func (oneByOne) Deliver(context.Context, *Delivery) error { return nil }

type bulk struct{ oneByOne }

func (bulk) MaxBatch() int                                          { return 10 }
func (bulk) DeliverBatch(_ context.Context, ds []*Delivery) []error { return make([]error, len(ds)) }

// Which vendors batch comes from the registry (Spec.Batches), not from a
// list in this package: a vendor added in its own file is named when a
// batch key is refused, and one whose Batches says otherwise than its sink
// does is a programming error found at build.
func TestBatchingVendorsComeFromTheRegistry(t *testing.T) {
	var r Registry
	newPlain := func(config.Sink, struct{}) (Sink, error) { return oneByOne{}, nil }
	newBulk := func(config.Sink, struct{}) (Sink, error) { return bulk{}, nil }
	r.Add(Spec[struct{}]{Name: "plain", New: newPlain}.vendor())
	r.Add(Spec[struct{}]{Name: "bulk-a", Batches: true, New: newBulk}.vendor())
	r.Add(Spec[struct{}]{Name: "bulk-b", Batches: true, New: newBulk}.vendor())
	var wrong Registry // vendors registered wrongly
	wrong.Add(Spec[struct{}]{Name: "liar", Batches: true, New: newPlain}.vendor())
	wrong.Add(Spec[struct{}]{Name: "shy", New: newBulk}.vendor())
	cfg := func(vendor string) config.Sink {
		return config.Sink{Name: "s", Vendor: vendor, Batch: &config.Batch{MaxItems: 5, MaxWait: time.Millisecond}}
	}
	for _, tt := range []struct {
		r               *Registry
		vendor, wantErr string
	}{
		{&r, "bulk-a", ""},
		{&r, "plain", "sinks[0].batch: vendor plain sends one event per request; remove batch (bulk-a and bulk-b batch)"},
		{&wrong, "liar", "vendor liar is registered with Batches but its sink does not batch"},
		{&wrong, "shy", "vendor shy batches but is not registered with Batches"},
	} {
		_, err := tt.r.Build([]config.Sink{cfg(tt.vendor)})
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.vendor, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: %v, want %q", tt.vendor, err, tt.wantErr)
		}
	}
	// The binary's own: the vendors whose sinks batch.
	var batching []string
	for _, v := range Vendors() {
		if v.Batches {
			batching = append(batching, v.Name)
		}
	}
	if got := strings.Join(batching, ","); got != "chabok,metrix-gateway,webhook" {
		t.Errorf("batching vendors %s", got)
	}
}
