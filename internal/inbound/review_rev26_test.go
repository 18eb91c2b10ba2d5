package inbound_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/inbound"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/internal/topology"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Review rev26. The webhook answers 413 (Kenar gives up: the notification
// is lost) when the events stream refuses the event for its max_msg_size
// (10054), taken to be "a refusal a retry cannot change". But the stream's
// limit is whatever the last bind wrote (topology.Ensure, every bind):
// during a rollout that raises streams.max_envelope_bytes, or with two
// configs on one deployment, a replica with the smaller limit binds after
// this one. A notification within this webhook's own limit
// (envelope.WithMaxBytes, the same setting) is then refused by the stream
// for a while, and stored once this config's next bind raises the limit
// again: a 503 would have had Kenar retry it; the 413 drops it.
func TestReviewRev26ANotificationWithinTheWebhooksLimitIsNotDroppedForTheStreamsOlderLimit(t *testing.T) {
	e := testenv.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// Another replica's bind, its config's limit a quarter of this one's.
	small := e.Streams
	small.MaxEnvelopeBytes = 256 << 10
	if err := topology.New(small).Ensure(ctx, e.JS); err != nil {
		t.Fatal(err)
	}
	pub := envelope.NewPublisher(e.JS, envelope.WithMaxBytes(e.Streams.MaxEnvelopeBytes))
	srv := httptest.NewServer(inbound.NewKenarWebhook(pub, config.Secret("id-key-1"), "divar-kenar", e.Log))
	defer srv.Close()
	body := `{"type":"NEW_MESSAGE","new_message":{"text":"` + strings.Repeat("x", 400<<10) + `"}}`
	call := func() (int, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(body))
		req.Header.Set("Authorization", "id-key-1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		text, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(text))
	}
	first, text := call()
	// This config's next bind: the limit is its own again.
	if err := e.Topo.Ensure(ctx, e.JS); err != nil {
		t.Fatal(err)
	}
	again, _ := call()
	if again != http.StatusOK {
		t.Fatalf("after this config's bind the notification is answered %d, want 200", again)
	}
	if first == http.StatusRequestEntityTooLarge {
		t.Errorf("a notification within this webhook's streams.max_envelope_bytes, refused by the stream's limit another bind set, is answered %d %q: "+
			"Kenar drops it, though the next bind makes it storable (stored at the retry a 503 would have asked for)", first, text)
	}
}
