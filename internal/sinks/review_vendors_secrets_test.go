package sinks

// Vendor conformance review (branch h-vendors): a credential that cannot
// be sent as a header.
//
// DEFECT (red until fixed): a credential holding a control character (a
// trailing newline from a ${VAR} whose value came from `echo` or a
// Kubernetes Secret made from a file; ${file:…} is trimmed, ${VAR} is not)
// passes validation, so `config check` and the start accept it. Every
// request then fails inside net/http ("invalid header field value") before
// it leaves, as a *transient* failure: each event is retried for up to
// max_elapsed (24 h) and the breaker opens as for a vendor outage, while no
// vendor ever saw a request. It must be refused at start, naming the key
// (and not echoing the value).

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

func TestReviewCredentialWithAControlCharacterIsRefusedAtStart(t *testing.T) {
	var got atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got.Add(1) }))
	defer srv.Close()
	track := event(t, envelope.TypeTrack, envelope.Track{Name: "order_paid", User: user})
	notify := event(t, envelope.TypeNotify, envelope.Notify{Message: "m", Target: envelope.Target{Type: "USER", ID: "u"}})
	for _, tc := range []struct {
		vendor   string
		key      string
		settings map[string]any
		d        *Delivery
	}{
		{"chabok", "access_token", map[string]any{"app_id": "a", "access_token": "S3cr3tTok\n"}, track},
		{"chabok", "access_token", map[string]any{"app_id": "a", "access_token": "S3cr3tTok\r\n"}, track},
		{"metrix-s2s", "dev_key", map[string]any{"app_id": "a", "dev_key": "S3cr3tKey\n"}, track},
		{"metrix-gateway", "api_key", map[string]any{"app_id": "a", "api_key": "S3cr3tKey\n"}, track},
		{"metrix-gateway", "app_id", map[string]any{"app_id": "App1d\n", "api_key": "key"}, track},
		{"kenar", "api_key", map[string]any{"api_key": "S3cr3tKey\n", "access_token": "tok"}, notify},
		{"kenar", "access_token", map[string]any{"api_key": "key", "access_token": "S3cr3tTok\n"}, notify},
	} {
		t.Run(tc.vendor+" "+tc.key+" "+strings.NewReplacer("\r", `\r`, "\n", `\n`).Replace(tc.settings[tc.key].(string)), func(t *testing.T) {
			var node yaml.Node
			if err := node.Encode(tc.settings); err != nil {
				t.Fatal(err)
			}
			v, _ := Lookup(tc.vendor)
			s, err := v.New(config.Sink{Name: "s", Vendor: tc.vendor, BaseURL: srv.URL, Concurrency: 1, Timeout: time.Second,
				Events: map[string]string{"order_paid": "aewqd"}, Settings: node}, "sinks[0].settings")
			if err != nil {
				if !strings.Contains(err.Error(), "sinks[0].settings."+tc.key) {
					t.Errorf("refused without naming the key: %v", err)
				}
				if strings.Contains(err.Error(), strings.TrimSpace(tc.settings[tc.key].(string))) {
					t.Errorf("the refusal echoes the secret: %v", err)
				}
				return
			}
			before := got.Load()
			derr := s.Deliver(context.Background(), tc.d)
			t.Errorf("accepted at start; each delivery then fails before any request (vendor saw %d), as %v (transient: %v)",
				got.Load()-before, derr, isTransient(derr))
		})
	}
}

func isTransient(err error) bool {
	e, ok := err.(*Error)
	return ok && e.Transient
}
