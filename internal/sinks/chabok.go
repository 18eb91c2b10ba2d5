package sinks

import (
	"context"
	"encoding/json"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Chabok: track and trackPurchase (docs: chabok-send-event).
//
//	POST https://{app_id}.push.adpdigital.com/api/installations/track
//	POST https://{app_id}.push.adpdigital.com/api/installations/trackPurchase
//	X-Access-Token: <access token>
//
// Mapping: chapar.track → track, chapar.purchase → trackPurchase.
// installationId when the user has chabokInstallationId (the event is
// attributed to that device), else userId (Chabok picks the user's last
// device). eventTime is epoch ms; eventData keeps typed values.
//
// Responses (errors are LoopBack style {"error":{"status","message","code"}}):
//
//	2xx            delivered
//	400            dead letter (malformed event)
//	401, 403       dead letter (wrong access token or app id)
//	404            dead letter (unknown app or installation)
//	408, 429, 5xx  retry
const chabokDefaultBaseURL = "https://{app_id}.push.adpdigital.com/api"

type chabokSettings struct {
	AppID       string        `yaml:"app_id"`
	AccessToken config.Secret `yaml:"access_token"`
	// Currencies renames ISO codes to Chabok's names (IRR → RIAL by default).
	Currencies map[string]string `yaml:"currencies"`
	// RequireMapping dead-letters events missing from the events table
	// instead of sending them under their own name.
	RequireMapping bool `yaml:"require_mapping"`
}

type chabok struct {
	name     string
	base     string
	settings chabokSettings
	events   map[string]string
	client   *httpClient
	// endpoints are the paths post takes, parsed and their headers built
	// once (httpcall.go, endpoint).
	endpoints map[string]*endpoint
}

// chabokPaths are the paths of Chabok's API that Chapar posts to.
var chabokPaths = []string{"/installations/track", "/installations/trackPurchase", "/installations/trackBulk"}

func init() {
	Register(Spec[chabokSettings]{
		Name:     "chabok",
		Summary:  "Chabok track and trackPurchase",
		Types:    []string{envelope.TypeTrack, envelope.TypePurchase},
		Defaults: func() chabokSettings { return chabokSettings{Currencies: map[string]string{"IRR": "RIAL"}} },
		Validate: func(s *chabokSettings, at string) error {
			return required(at, "app_id", s.AppID, "access_token", s.AccessToken.Value())
		},
		New:     newChabok,
		Batches: true,
	})
}

func newChabok(cfg config.Sink, s chabokSettings) (Sink, error) {
	base := cfg.BaseURL
	if base == "" {
		base = chabokDefaultBaseURL
	}
	c := &chabok{
		name:      cfg.Name,
		base:      strings.TrimSuffix(strings.ReplaceAll(base, "{app_id}", s.AppID), "/"),
		settings:  s,
		events:    cfg.Events,
		client:    newHTTPClient(cfg),
		endpoints: map[string]*endpoint{},
	}
	for _, p := range chabokPaths {
		c.endpoints[p] = c.endpoint(p)
	}
	return c, nil
}

// endpoint is path's URL with Chabok's authentication.
func (c *chabok) endpoint(path string) *endpoint {
	return newEndpoint(c.base+path, "X-Access-Token", c.settings.AccessToken.Value())
}

type chabokEvent struct {
	InstallationID string         `json:"installationId,omitempty"`
	UserID         string         `json:"userId,omitempty"`
	EventName      string         `json:"eventName"`
	EventTime      int64          `json:"eventTime"`
	EventData      map[string]any `json:"eventData,omitempty"`
	Revenue        json.Number    `json:"revenue,omitempty"`
	Currency       string         `json:"currency,omitempty"`
}

// request maps a delivery to Chabok's request; it is separate from Deliver
// so tests and benchmarks can check the exact request.
func (c *chabok) request(d *Delivery) (*http.Request, error) {
	body, path, err := c.event(d)
	if err != nil {
		return nil, err
	}
	return c.post(path, body)
}

// event maps a delivery to the body of one track or trackPurchase item and
// the path it goes to.
func (c *chabok) event(d *Delivery) (chabokEvent, string, error) {
	ev := d.Event
	var track *envelope.Track
	path := "/installations/track"
	switch {
	case ev.Track != nil:
		track = ev.Track
	case ev.Purchase != nil:
		track = &ev.Purchase.Track
		path = "/installations/trackPurchase"
	default:
		return chabokEvent{}, "", reject(ReasonUnsupportedEvent, "Chabok takes chapar.track and chapar.purchase, not %s", ev.Type)
	}
	name, err := mapName(c.events, track.Name, c.settings.RequireMapping, c.name)
	if err != nil {
		return chabokEvent{}, "", err
	}
	body := chabokEvent{
		EventName: name,
		EventTime: ev.OccurredAt(d.ReceivedAt).UnixMilli(),
		EventData: track.Properties,
	}
	switch {
	case track.User.ChabokInstallationID != "":
		body.InstallationID = track.User.ChabokInstallationID
	case track.User.ID != "":
		body.UserID = track.User.ID
	default:
		return chabokEvent{}, "", reject(ReasonInvalidForVendor, "Chabok needs data.user.chabokInstallationId or data.user.id")
	}
	if p := ev.Purchase; p != nil {
		body.Revenue = p.Revenue
		body.Currency = p.Currency
		if name, ok := c.settings.Currencies[p.Currency]; ok {
			body.Currency = name
		}
	}
	return body, path, nil
}

// post builds an authenticated request of body to path.
func (c *chabok) post(path string, body any) (*http.Request, error) {
	e, ok := c.endpoints[path]
	if !ok {
		e = c.endpoint(path)
	}
	return e.post(body)
}

func (c *chabok) Deliver(ctx context.Context, d *Delivery) error {
	req, err := c.request(d)
	if err != nil {
		return err
	}
	return send(ctx, c.client, req, chabokCode)
}

// chabokCode reads a LoopBack error {"error":{"name","status","message",
// "code"}} in every shape LoopBack gives: the code as written (UPPER_SNAKE
// or a driver's, such as ER_DUP_ENTRY), else a code-like prefix of the
// message ("INVALID_EVENT: …"), else a specific error name
// (ValidationError, not Error); anything else is searched as for every
// vendor.
func chabokCode(body []byte) (code, message string) {
	var b struct {
		Error struct {
			Name    string `json:"name"`
			Message string `json:"message"`
			Code    any    `json:"code"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &b) != nil {
		return findCode(body)
	}
	e := b.Error
	switch c := e.Code.(type) {
	case string:
		if c = strings.TrimSpace(c); c != "" && !strings.ContainsAny(c, " \t\n") && len(c) <= 64 {
			return c, e.Message
		}
	case float64:
		return strconv.FormatFloat(c, 'f', -1, 64), e.Message
	}
	if m := codePrefix.FindStringSubmatch(e.Message); m != nil {
		return m[1], e.Message
	}
	if e.Name != "" && e.Name != "Error" && !strings.ContainsAny(e.Name, " \t\n") {
		return e.Name, e.Message
	}
	code, msg := findCode(body)
	if e.Message != "" {
		msg = e.Message
	}
	return code, msg
}

// codePrefix is an UPPER_SNAKE code at the start of a message.
var codePrefix = regexp.MustCompile(`^([A-Z][A-Z0-9]*_[A-Z0-9_]+)\b`)
