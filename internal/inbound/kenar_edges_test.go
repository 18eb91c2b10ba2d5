package inbound_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/inbound"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// A notification the receiver reads (it is within KenarMaxBody) but whose
// envelope the events stream can never store (over
// streams.max_envelope_bytes, 1 MiB - 64 KiB by default) must be refused
// for good (413 or 400), not answered 503 "retry": Kenar would retry a
// call that can never succeed, for as long as it retries, and the
// notification is never stored either way.
func TestKenarWebhookPermanentRefusalIsNotRetry(t *testing.T) {
	e := testenv.New(t)
	// The publisher as `dispatcher run` makes it: checking the config's
	// streams.max_envelope_bytes before the broker does.
	pub := envelope.NewPublisher(e.JS, envelope.WithMaxBytes(e.Streams.MaxEnvelopeBytes))
	hook := inbound.NewKenarWebhook(pub, config.Secret("id-key-1"), "divar-kenar", e.Log)
	srv := httptest.NewServer(hook)
	defer srv.Close()
	// 1,000,000 bytes: under the receiver's 1 MiB, over the stream's limit.
	pad := 1_000_000 - len(`{"type":"NEW_MESSAGE","new_message":{"text":""}}`)
	long := `{"type":"NEW_MESSAGE","new_message":{"text":"` + strings.Repeat("x", pad) + `"}}`
	// 800 KB of an array of objects: flatten writes it as JSON text, whose
	// quotes the envelope escapes, so the envelope is over 1 MiB.
	items := strings.TrimSuffix(strings.Repeat(`{"k":"v"},`, 80_000), ",")
	nested := `{"type":"POST_UPDATE","post_update":{"items":[` + items + `]}}`
	for _, tc := range []struct{ name, body string }{{"long text", long}, {"array of objects", nested}} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.body) > inbound.KenarMaxBody {
				t.Fatalf("body of %d bytes is over the receiver's limit", len(tc.body))
			}
			for i := range 2 { // Kenar's retry meets the same answer
				req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(tc.body))
				req.Header.Set("Authorization", "id-key-1")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				text, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 == 5 {
					t.Errorf("call %d (body %d bytes): %d %q: a notification that can never be stored is answered as a transient failure, so Kenar retries it for ever; want 413 (or 400)",
						i+1, len(tc.body), resp.StatusCode, strings.TrimSpace(string(text)))
				}
			}
		})
	}
	s, err := e.JS.Stream(context.Background(), e.Topo.EventsStream())
	if err != nil {
		t.Fatal(err)
	}
	if n := s.CachedInfo().State.Msgs; n != 0 {
		t.Errorf("events stream holds %d", n)
	}
}
