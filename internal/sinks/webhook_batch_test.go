package sinks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/outcome"
	"github.com/chapar-dev/chapar/internal/sinks"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// batchWebhook builds a webhook sink with a batch key, from YAML.
func batchWebhook(t *testing.T, url, settings string) (sinks.BatchSink, error) {
	t.Helper()
	cfg, err := config.Parse([]byte("sinks:\n  - name: hook\n    vendor: webhook\n    timeout: 2s\n    batch: {max_items: 100, max_wait: 10ms}\n    settings:\n      url: "+url+"\n"+indent(settings, "      ")),
		func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	built, err := sinks.Build(cfg.Sinks)
	if err != nil {
		return nil, err
	}
	return built["hook"].(sinks.BatchSink), nil
}

func tracks(t *testing.T, names ...string) []*sinks.Delivery {
	t.Helper()
	var ds []*sinks.Delivery
	for i, name := range names {
		env, err := envelope.New(envelope.TypeTrack, "shop", envelope.Track{Name: name, User: envelope.User{ID: fmt.Sprint("u-", i)}},
			envelope.WithID(fmt.Sprint("evt-", i)), envelope.WithTime(time.Date(2026, 11, 23, 10, 15, i, 0, time.UTC)))
		if err != nil {
			t.Fatal(err)
		}
		ev, err := env.Decode()
		if err != nil {
			t.Fatal(err)
		}
		ds = append(ds, &sinks.Delivery{Event: ev, ReceivedAt: time.Now()})
	}
	return ds
}

func TestWebhookBatchIsOneSignedArray(t *testing.T) {
	secret := newSecret(t)
	rc := &receiver{t: t, secrets: []string{secret}}
	srv := httptest.NewServer(rc)
	defer srv.Close()
	s, err := batchWebhook(t, srv.URL, `signing: {secrets: ["`+secret+`"]}`)
	if err != nil {
		t.Fatal(err)
	}
	ds := tracks(t, "a", "b", "c")
	for _, err := range s.DeliverBatch(context.Background(), ds) {
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(rc.got) != 1 || rc.verified != 1 {
		t.Fatalf("%d requests, %d verified; want one signed request", len(rc.got), rc.verified)
	}
	if ct := rc.got[0].Header.Get("Content-Type"); ct != "application/cloudevents-batch+json; charset=utf-8" {
		t.Errorf("Content-Type %q", ct)
	}
	var events []map[string]any
	if err := json.Unmarshal(rc.bodies[0], &events); err != nil || len(events) != 3 {
		t.Fatalf("body %s: %v", rc.bodies[0], err)
	}
	for i, e := range events {
		if e["id"] != fmt.Sprint("evt-", i) || e["specversion"] != "1.0" {
			t.Errorf("item %d: %v", i, e)
		}
	}
	// The same batch again (a retry) has the same webhook-id; another
	// grouping another one.
	id := rc.got[0].Header.Get("webhook-id")
	s.DeliverBatch(context.Background(), ds)
	s.DeliverBatch(context.Background(), ds[:2])
	if !strings.HasPrefix(id, "batch_") || rc.got[1].Header.Get("webhook-id") != id || rc.got[2].Header.Get("webhook-id") == id {
		t.Errorf("webhook-ids %q %q %q", id, rc.got[1].Header.Get("webhook-id"), rc.got[2].Header.Get("webhook-id"))
	}
}

// A receiver that refuses the array for one bad item: the batch is halved
// until that item fails alone; its neighbours are delivered. An item whose
// template fails is dead-lettered without being sent.
func TestWebhookBatchBadItemFailsAlone(t *testing.T) {
	var requests int
	var delivered []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests++
		var items []map[string]any
		if err := json.NewDecoder(r.Body).Decode(&items); err != nil || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("not a JSON array: %v, %s", err, r.Header.Get("Content-Type"))
		}
		for _, it := range items {
			if it["event"] == "poison" {
				w.WriteHeader(http.StatusUnprocessableEntity)
				fmt.Fprint(w, `{"code":"BAD_ITEM"}`)
				return
			}
		}
		for _, it := range items {
			delivered = append(delivered, it["event"].(string))
		}
	}))
	defer srv.Close()
	s, err := batchWebhook(t, srv.URL, `template: '{"event": {{json .data.name}}{{if eq .data.name "no_user"}}, "x": {{json .data.missing}}{{end}}}'`)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"a", "b", "no_user", "c", "d", "poison", "e", "f"}
	errs := s.DeliverBatch(context.Background(), tracks(t, names...))
	for i, err := range errs {
		var e *sinks.Error
		switch names[i] {
		case "poison":
			if !errors.As(err, &e) || e.Transient || e.Status != 422 || e.Code != "BAD_ITEM" {
				t.Errorf("poison: %v", err)
			}
		case "no_user":
			if !errors.As(err, &e) || e.Reason != outcome.InvalidForVendor {
				t.Errorf("no_user: %v", err)
			}
		default:
			if err != nil {
				t.Errorf("%s: %v", names[i], err)
			}
		}
	}
	if strings.Join(delivered, "") != "abcdef" || requests > 7 {
		t.Errorf("delivered %v in %d requests", delivered, requests)
	}
}

func TestWebhookBatchRetriesWholeOnAnOutage(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	s, err := batchWebhook(t, srv.URL, "body: data")
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range s.DeliverBatch(context.Background(), tracks(t, "a", "b", "c")) {
		var e *sinks.Error
		if !errors.As(err, &e) || !e.Transient {
			t.Errorf("item %d: want transient, got %v", i, err)
		}
	}
}

func TestWebhookBatchConfig(t *testing.T) {
	if _, err := batchWebhook(t, "http://x", "body: binary"); err == nil ||
		!strings.Contains(err.Error(), "sinks[0].batch: settings.body binary carries each event's attributes as headers") {
		t.Errorf("binary: %v", err)
	}
	if _, err := batchWebhook(t, "http://x", "body: data\ntemplate: '{}'"); err != nil {
		t.Errorf("data with a template: %v", err)
	}
}
