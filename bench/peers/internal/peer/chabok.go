// Package peer is what the benchmark's peer consumers share: their flags,
// the JetStream consumer they bind to, and the vendor request they send,
// which is the request Chapar's chabok sink sends for the same envelope.
package peer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"
)

// Chabok posts events to one Chabok endpoint (the benchmark's emulator).
type Chabok struct {
	url    string
	token  string
	client *http.Client
}

// NewChabok returns a client for base (e.g. http://127.0.0.1:9101/api)
// with a keep-alive pool of workers connections, as Chapar's sinks have.
func NewChabok(base, token string, workers int) *Chabok {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	return &Chabok{
		url:   base + "/installations/track",
		token: token,
		client: &http.Client{
			Timeout: 10 * time.Second,
			Transport: &http.Transport{
				DialContext:         dialer.DialContext,
				MaxIdleConns:        workers,
				MaxIdleConnsPerHost: workers,
				MaxConnsPerHost:     workers,
				IdleConnTimeout:     90 * time.Second,
			},
		},
	}
}

// envelope is the part of a CloudEvents envelope a chapar.track event
// needs for Chabok's track call.
type envelope struct {
	Time *time.Time `json:"time"`
	Data struct {
		Name       string         `json:"name"`
		Properties map[string]any `json:"properties"`
		User       struct {
			ID                   string `json:"id"`
			ChabokInstallationID string `json:"chabokInstallationId"`
		} `json:"user"`
	} `json:"data"`
}

// track is Chabok's track request body, field for field as Chapar sends it.
type track struct {
	InstallationID string         `json:"installationId,omitempty"`
	UserID         string         `json:"userId,omitempty"`
	EventName      string         `json:"eventName"`
	EventTime      int64          `json:"eventTime"`
	EventData      map[string]any `json:"eventData,omitempty"`
}

// Body maps an envelope to Chabok's track request body.
func Body(raw []byte) ([]byte, error) {
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("decode envelope: %w", err)
	}
	at := time.Now()
	if env.Time != nil {
		at = *env.Time
	}
	t := track{EventName: env.Data.Name, EventTime: at.UnixMilli(), EventData: env.Data.Properties}
	if id := env.Data.User.ChabokInstallationID; id != "" {
		t.InstallationID = id
	} else {
		t.UserID = env.Data.User.ID
	}
	return json.Marshal(t)
}

// Post sends one envelope to Chabok; nil means the vendor answered 2xx.
func (c *Chabok) Post(ctx context.Context, raw []byte) error {
	body, err := Body(raw)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("X-Access-Token", c.token)
	resp, err := c.client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("chabok: %s", resp.Status)
	}
	return nil
}
