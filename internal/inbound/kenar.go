// Package inbound holds the receivers Chapar serves for events that come
// from outside the bus: vendors that call Chapar back. Each turns what it
// receives into an envelope and publishes it on the events stream, so it
// routes like any producer's event. They are not sinks: nothing here
// delivers.
package inbound

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Kenar's webhook: the receiver `dispatcher run` serves on
// kenar_webhook.listen.
//
// Kenar calls the app's webhook URL with header Authorization: <the
// identification key from the panel> (a static secret; no signature) and a
// body {"type": "NEW_MESSAGE" | "NEW_CHATBOT_MESSAGE" |
// "USER_ACCESS_REVOCATION" | "POST_UPDATE" | "PAYMENT_TRANSACTION",
// "metadata": {…}, "<payload>": {…}}.
//
// Each notification becomes a chapar.track envelope named kenar.<type in
// lower case> (kenar.new_message, …) whose properties are the body's values
// flattened to dotted keys, so Kenar events route to other sinks like any
// producer's. Kenar delivers duplicates: the envelope id is a hash of the
// body, so JetStream drops a repeat within the duplicate window.

// KenarMaxBody is the largest notification body the receiver reads: an
// envelope's limit.
const KenarMaxBody = envelope.DefaultMaxBytes

// EventPublisher is what the webhook needs from JetStream.
type EventPublisher interface {
	Publish(ctx context.Context, env *envelope.Envelope) (*jetstream.PubAck, error)
}

// KenarWebhook serves the endpoint Kenar calls back.
type KenarWebhook struct {
	pub    EventPublisher
	key    []byte
	source string
	log    *zap.Logger
}

// NewKenarWebhook checks Authorization against key and publishes through pub.
func NewKenarWebhook(pub EventPublisher, key config.Secret, source string, log *zap.Logger) *KenarWebhook {
	return &KenarWebhook{pub: pub, key: []byte(key.Value()), source: source, log: log}
}

func (h *KenarWebhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	// Constant time, so the key cannot be guessed byte by byte.
	if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), h.key) != 1 {
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	// Over the limit: 413, whether Content-Length says so up front or a
	// chunked body runs past it.
	if r.ContentLength > KenarMaxBody {
		http.Error(w, "body over 1 MiB", http.StatusRequestEntityTooLarge)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, KenarMaxBody+1))
	switch {
	case err != nil:
		http.Error(w, "body unreadable", http.StatusBadRequest)
		return
	case len(body) > KenarMaxBody:
		http.Error(w, "body over 1 MiB", http.StatusRequestEntityTooLarge)
		return
	}
	env, err := KenarNotificationEnvelope(body, h.source)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	ack, err := h.pub.Publish(r.Context(), env)
	if tooLarge(err) {
		// For good: the envelope of this notification is over the
		// events stream's limit, and would be on every retry.
		h.log.Warn("kenar webhook: notification too large to store", zap.String("event_id", env.ID), zap.Error(err))
		http.Error(w, "notification too large to store: its event is over streams.max_envelope_bytes", http.StatusRequestEntityTooLarge)
		return
	}
	if err != nil {
		// Kenar retries a failed call; nothing is lost by refusing it.
		h.log.Error("kenar webhook: publish failed", zap.Error(err))
		http.Error(w, "could not store the event; retry", http.StatusServiceUnavailable)
		return
	}
	h.log.Info("kenar webhook accepted", zap.String("event_id", env.ID), zap.Bool("duplicate", ack.Duplicate))
	w.WriteHeader(http.StatusOK)
}

// tooLarge says a publish was refused because of the envelope's size,
// which a retry cannot change: the publisher's own check of this config's
// streams.max_envelope_bytes (the envelope was otherwise valid:
// KenarNotificationEnvelope checked it), or the server's max_payload. Not
// the stream's max_msg_size: that is whatever the last bind wrote, and
// during a rollout raising the limit, or with two configs on one
// deployment, a bind of another config may have set it lower for now; a
// notification within this config's limit is answered 503, for Kenar to
// retry, not dropped (TestReviewRev26ANotificationWithinTheWebhooksLimit-
// IsNotDroppedForTheStreamsOlderLimit).
func tooLarge(err error) bool {
	var verr *envelope.ValidationError
	return errors.As(err, &verr) || errors.Is(err, nats.ErrMaxPayload)
}

// KenarNotificationEnvelope turns a webhook body into a chapar.track
// envelope (see above).
//
// The body is refused as the bus path (pkg/envelope) refuses an envelope:
// invalid UTF-8, which encoding/json would silently replace with U+FFFD
// (and the event would carry text Kenar never sent), and anything but
// white space after the object, which it would silently ignore.
func KenarNotificationEnvelope(body []byte, source string) (*envelope.Envelope, error) {
	if !utf8.Valid(body) {
		return nil, fmt.Errorf("body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var n map[string]any
	if err := dec.Decode(&n); err != nil || n == nil {
		return nil, fmt.Errorf("body is not a JSON object")
	}
	if rest := bytes.TrimLeft(body[dec.InputOffset():], " \t\r\n"); len(rest) > 0 {
		return nil, fmt.Errorf("body has data after the JSON object (at byte %d)", len(body)-len(rest))
	}
	typ, _ := n["type"].(string)
	if typ == "" {
		return nil, fmt.Errorf("body has no type")
	}
	props := map[string]any{}
	flatten("", n, props)
	userID := "kenar"
	for _, k := range []string{"metadata.user_id", "user_id", "new_chatbot_message.sender.id", "new_message.sender.id", "sender.id"} {
		if v, ok := props[k].(string); ok && v != "" {
			userID = v
			break
		}
	}
	sum := sha256.Sum256(body)
	return envelope.New(envelope.TypeTrack, source, envelope.Track{
		Name:       "kenar." + strings.ToLower(typ),
		Properties: props,
		User:       envelope.User{ID: userID},
	}, envelope.WithID("kenar-"+hex.EncodeToString(sum[:16])))
}

// flatten turns nested objects into dotted keys; arrays of scalars stay,
// other arrays become JSON text.
func flatten(prefix string, v any, out map[string]any) {
	switch x := v.(type) {
	case map[string]any:
		for k, c := range x {
			key := k
			if prefix != "" {
				key = prefix + "." + k
			}
			flatten(key, c, out)
		}
	case []any:
		for _, c := range x {
			switch c.(type) {
			case string, bool, json.Number:
			default:
				out[prefix] = stringify(x)
				return
			}
		}
		out[prefix] = x
	case nil:
	default:
		if prefix != "" {
			out[prefix] = x
		}
	}
}

// stringify is a JSON value as text: strings as they are, the rest as JSON.
func stringify(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		return strconv.FormatBool(x)
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}
