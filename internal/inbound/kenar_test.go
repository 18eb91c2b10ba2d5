package inbound_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/internal/inbound"
	"github.com/chapar-dev/chapar/internal/testenv"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

func TestKenarWebhookAuthenticatesDeduplicatesAndRoutes(t *testing.T) {
	e := testenv.New(t)
	d := e.Start([]config.Sink{e.Sink("gateway", emulator.MetrixGateway, map[string]string{"kenar.new_message": "aewqd"}, nil)},
		[]config.Route{{Names: []string{"kenar.*"}, Sinks: []string{"gateway"}}})
	// The events stream keeps the event once delivered (limits
	// retention), for inspection below.
	hook := inbound.NewKenarWebhook(envelope.NewPublisher(e.JS), config.Secret("id-key-1"), "divar-kenar", e.Log)
	srv := httptest.NewServer(hook)
	defer srv.Close()
	body := `{"type":"NEW_MESSAGE","metadata":{"app_slug":"shop","user_id":"kenar-user-9"},"new_message":{"id":"m-1","text":"is it available?","sender":{"id":"s-1"}}}`
	post := func(auth, b string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(b))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, auth := range []string{"", "id-key-2", "Bearer id-key-1", "id-key-"} {
		if got := post(auth, body); got != http.StatusUnauthorized {
			t.Errorf("Authorization %q: %d, want 401", auth, got)
		}
	}
	if got := post("id-key-1", "not json"); got != http.StatusBadRequest {
		t.Errorf("bad body: %d", got)
	}
	for range 3 { // Kenar sends duplicates
		if got := post("id-key-1", body); got != http.StatusOK {
			t.Fatalf("valid call: %d", got)
		}
	}
	testenv.Eventually(t, 10*time.Second, "the notification delivered onward", func() bool { return d.Tally.DeliveredTo("gateway") == 1 })
	s, _ := e.JS.Stream(context.Background(), e.Topo.EventsStream())
	info, _ := s.Info(context.Background())
	if info.State.Msgs != 1 {
		t.Errorf("events stream holds %d messages; duplicates must be dropped", info.State.Msgs)
	}
	msg, err := s.GetMsg(context.Background(), info.State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := envelope.Parse(msg.Data, 0)
	if err != nil {
		t.Fatal(err)
	}
	if ev.Source != "divar-kenar" || ev.Track.Name != "kenar.new_message" || ev.Track.User.ID != "kenar-user-9" {
		t.Errorf("envelope %+v %+v", ev.Envelope, ev.Track)
	}
	if ev.Track.Properties["new_message.text"] != "is it available?" || ev.Track.Properties["new_message.sender.id"] != "s-1" {
		t.Errorf("properties %v", ev.Track.Properties)
	}
}

// publishCounter is an EventPublisher that counts what it is given.
type publishCounter struct{ n int }

func (p *publishCounter) Publish(context.Context, *envelope.Envelope) (*jetstream.PubAck, error) {
	p.n++
	return &jetstream.PubAck{}, nil
}

// Over the size limit is 413, whether Content-Length says so or a chunked
// body runs past it; the key is checked first, wrong methods are 405.
func TestKenarWebhookLimitsTheBody(t *testing.T) {
	pub := &publishCounter{}
	srv := httptest.NewServer(inbound.NewKenarWebhook(pub, config.Secret("id-key-1"), "divar-kenar", zap.NewNop()))
	defer srv.Close()
	big := `{"type":"NEW_MESSAGE","new_message":{"text":"` + strings.Repeat("x", inbound.KenarMaxBody) + `"}}`
	fits := `{"type":"NEW_MESSAGE","new_message":{"text":"` + strings.Repeat("x", 1000) + `"}}`
	do := func(method, auth string, body io.Reader, chunked bool) int {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL, body)
		req.Header.Set("Authorization", auth)
		if chunked {
			req.ContentLength = -1 // sent chunked: the length is unknown up front
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tt := range []struct {
		name, method, auth, body string
		chunked                  bool
		want                     int
	}{
		{"over, with Content-Length", http.MethodPost, "id-key-1", big, false, http.StatusRequestEntityTooLarge},
		{"over, chunked", http.MethodPost, "id-key-1", big, true, http.StatusRequestEntityTooLarge},
		{"over, without the key", http.MethodPost, "wrong", big, false, http.StatusUnauthorized},
		{"GET", http.MethodGet, "id-key-1", "", false, http.StatusMethodNotAllowed},
		{"fits", http.MethodPost, "id-key-1", fits, false, http.StatusOK},
		{"fits, chunked", http.MethodPost, "id-key-1", fits, true, http.StatusOK},
	} {
		if got := do(tt.method, tt.auth, strings.NewReader(tt.body), tt.chunked); got != tt.want {
			t.Errorf("%s: %d, want %d", tt.name, got, tt.want)
		}
	}
	if pub.n != 2 {
		t.Errorf("published %d notifications, want the 2 that fit", pub.n)
	}
}

// A body the bus path (pkg/envelope) would refuse is refused here too,
// with 400 and nothing published: invalid UTF-8 (not replaced with U+FFFD)
// and anything but white space after the JSON object.
func TestKenarWebhookRefusesInvalidUTF8AndTrailingData(t *testing.T) {
	pub := &publishCounter{}
	srv := httptest.NewServer(inbound.NewKenarWebhook(pub, config.Secret("id-key-1"), "divar-kenar", zap.NewNop()))
	defer srv.Close()
	const ok = `{"type":"NEW_MESSAGE","new_message":{"text":"salam"}}`
	for _, tt := range []struct {
		name, body, wantText string
		want                 int
	}{
		{"valid", ok, "", http.StatusOK},
		{"valid, trailing white space", ok + " \r\n\t", "", http.StatusOK},
		{"invalid UTF-8 in a value", `{"type":"NEW_MESSAGE","new_message":{"text":"sal` + "\xff\xfe" + `am"}}`, "UTF-8", http.StatusBadRequest},
		{"invalid UTF-8 in a key", `{"type":"NEW_MESSAGE","new_` + "\xc3\x28" + `":1}`, "UTF-8", http.StatusBadRequest},
		{"trailing garbage", ok + "garbage", "after the JSON object", http.StatusBadRequest},
		{"a second object", ok + `{"type":"POST_UPDATE"}`, "after the JSON object", http.StatusBadRequest},
		{"trailing comma", ok + ",", "after the JSON object", http.StatusBadRequest},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := pub.n
			req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader(tt.body))
			req.Header.Set("Authorization", "id-key-1")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			text, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want || !strings.Contains(string(text), tt.wantText) {
				t.Errorf("%d %q, want %d with %q", resp.StatusCode, text, tt.want, tt.wantText)
			}
			if published := pub.n - before; (tt.want == http.StatusOK) != (published == 1) {
				t.Errorf("published %d", published)
			}
		})
	}
}
