package sinks_test

// The vendor of docs/sinks.md "Adding a vendor", registered from this one
// file, end to end through the real dispatcher on an embedded JetStream.
// TestAddingAVendorDocIsThisFile keeps the docs and this file the same.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// --- begin: docs/sinks.md, adding a vendor ---

// Acme Push: POST {base_url}/v1/events, header X-Acme-Key.
// chapar.track → {"user": user.id, "event": events[name], "at": epoch ms}.
// Answers: 2xx delivered; 408, 429, 5xx retry; others dead letter, with
// the code from {"code": "…"}.
type acmeSettings struct {
	APIKey config.Secret `yaml:"api_key"`
}

type acme struct {
	url    string
	key    string
	events map[string]string
	http   *sinks.HTTP
}

func init() {
	sinks.Register(sinks.Spec[acmeSettings]{
		Name:    "acme-push",
		Summary: "Acme Push events (the docs' walk-through)",
		Validate: func(s *acmeSettings, at string) error {
			if s.APIKey.Value() == "" {
				return fmt.Errorf("%s.api_key: is required", at)
			}
			return nil
		},
		New: func(cfg config.Sink, s acmeSettings) (sinks.Sink, error) {
			return &acme{
				url:    strings.TrimSuffix(cfg.BaseURL, "/") + "/v1/events",
				key:    s.APIKey.Value(),
				events: cfg.Events,
				http:   sinks.NewHTTP(cfg, nil),
			}, nil
		},
	})
}

func (a *acme) Deliver(ctx context.Context, d *sinks.Delivery) error {
	t := d.Event.Track
	if t == nil {
		return &sinks.Error{Reason: outcome.UnsupportedEvent, Message: "Acme takes chapar.track only"}
	}
	name := t.Name
	if n, ok := a.events[name]; ok {
		name = n
	}
	req, err := sinks.JSONRequest(a.url, map[string]any{
		"user": t.User.ID, "event": name, "at": d.Event.OccurredAt(d.ReceivedAt).UnixMilli(),
	})
	if err != nil {
		return err
	}
	req.Header.Set("X-Acme-Key", a.key)
	return a.http.Do(ctx, req)
}

// --- end: docs/sinks.md, adding a vendor ---

// acmeAPI stands in for Acme: it accepts events with the right key and
// refuses the event named "bad" with 400 {"code":"BAD_EVENT"}.
type acmeAPI struct {
	mu  sync.Mutex
	got []map[string]any
}

func (a *acmeAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	_ = json.NewDecoder(r.Body).Decode(&body)
	switch {
	case r.URL.Path != "/v1/events" || r.Header.Get("X-Acme-Key") != "acme-key":
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"code":"BAD_KEY"}`)
	case body["event"] == "bad":
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"code":"BAD_EVENT","message":"no such event"}`)
	default:
		a.mu.Lock()
		a.got = append(a.got, body)
		a.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
	}
}

func TestAddingAVendorEndToEnd(t *testing.T) {
	api := &acmeAPI{}
	srv := httptest.NewServer(api)
	defer srv.Close()

	e := testenv.New(t)
	// The sink as configured in YAML: the registry knows the vendor.
	cfg, err := config.Parse([]byte(`
sinks:
  - name: acme
    vendor: acme-push
    base_url: `+srv.URL+`
    events: {order_paid: OrderPaid}
    settings:
      api_key: ${ACME_API_KEY}
routes:
  - sinks: [acme]
`), func(k string) (string, bool) { return "acme-key", k == "ACME_API_KEY" })
	if err != nil {
		t.Fatal(err)
	}
	cfg.Sinks[0].Retry = testenv.FastRetry()
	d := e.Start(cfg.Sinks, cfg.Routes)

	e.Publish(testenv.Track(t, "order_paid", "u1"))
	e.Publish(testenv.Track(t, "bad", "u2"))
	testenv.Eventually(t, 10*time.Second, "one delivered, one dead-lettered", func() bool {
		_, _, counts := d.Tally.Snapshot()
		return d.Tally.DeliveredTo("acme") == 1 && len(counts) == 1 && counts[0].DeadLettered[string(outcome.VendorRejected)] == 1
	})
	api.mu.Lock()
	if len(api.got) != 1 || api.got[0]["event"] != "OrderPaid" || api.got[0]["user"] != "u1" {
		t.Errorf("Acme received %v", api.got)
	}
	api.mu.Unlock()
	recs, err := dlq.NewStore(e.JS, e.Topo).List(context.Background(), dlq.Filter{}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 1 || recs[0].Sink != "acme" || recs[0].Status != 400 || recs[0].Code != "BAD_EVENT" || recs[0].EventType != envelope.TypeTrack {
		t.Errorf("dead letters %+v", recs)
	}
}

// The walk-through in docs/sinks.md shows this file's vendor verbatim.
func TestAddingAVendorDocIsThisFile(t *testing.T) {
	const begin, end = "// --- begin: docs/sinks.md, adding a vendor ---\n", "// --- end: docs/sinks.md, adding a vendor ---"
	src, err := os.ReadFile("walkthrough_test.go")
	if err != nil {
		t.Fatal(err)
	}
	_, code, _ := strings.Cut(string(src), begin)
	code, _, _ = strings.Cut(code, end)
	doc, err := os.ReadFile("../../docs/sinks.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(doc), "```go\n"+strings.TrimSpace(code)+"\n```") {
		t.Error("docs/sinks.md \"Adding a vendor\" does not show the vendor of walkthrough_test.go verbatim; copy it between the markers")
	}
}
