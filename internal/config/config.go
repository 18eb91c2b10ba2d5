// Package config loads Chapar's one YAML file: it expands ${VAR} and
// ${file:/path} references (so secrets stay out of the file), fills
// defaults, and validates everything at start, naming each problem's key.
package config

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"regexp"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Config is the whole file.
type Config struct {
	NATS       NATS       `yaml:"nats"`
	Streams    Streams    `yaml:"streams"`
	Dispatcher Dispatcher `yaml:"dispatcher"`
	Webhook    Webhook    `yaml:"kenar_webhook"` // the Kenar receiver; "webhook" until renamed (deprecated.go)
	Admin      Admin      `yaml:"admin"`
	// SinkDefaults apply to every sink that leaves a key out.
	SinkDefaults SinkDefaults `yaml:"sink_defaults"`
	Sinks        []Sink       `yaml:"sinks"`
	Routes       []Route      `yaml:"routes"`

	// Warnings are what the file should change but still works with (a
	// key under its old name); `dispatcher run` logs them and `config
	// check` prints them.
	Warnings []string `yaml:"-"`

	// resolved maps each value a ${…} reference brought in to the
	// reference, for Redact.
	resolved map[string]string

	// inherited maps a sink's key to the sink_defaults key it was taken
	// from (sinks[0].timeout → sink_defaults.timeout), so that errors name
	// the line to fix. Parse fills it; a Config built in code has none.
	inherited map[string]string
}

// SinkDefaults are the keys a sink inherits: a key a sink leaves out takes
// its value from here, and a key left out here takes the built-in default.
// A key that is written keeps its value, zero or not.
type SinkDefaults struct {
	Concurrency   int                   `yaml:"concurrency"`
	MaxAckPending int                   `yaml:"max_ack_pending"`
	Timeout       time.Duration         `yaml:"timeout"`
	Retry         retry.Policy          `yaml:"retry"`
	Breaker       retry.BreakerSettings `yaml:"breaker"`
}

// NATS says where JetStream is. With no URL the dispatcher embeds a server.
type NATS struct {
	URL      string        `yaml:"url"`
	Name     string        `yaml:"name"`
	User     string        `yaml:"user"`
	Password Secret        `yaml:"password"`
	Token    Secret        `yaml:"token"`
	Creds    string        `yaml:"creds_file"`
	NKeyFile string        `yaml:"nkey_file"`
	TLS      TLS           `yaml:"tls"`
	Timeout  time.Duration `yaml:"connect_timeout"`
	Embedded Embedded      `yaml:"embedded"`
}

// TLS for the NATS connection.
type TLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Embedded configures the nats-server started when nats.url is empty.
type Embedded struct {
	Listen  string `yaml:"listen"`
	DataDir string `yaml:"data_dir"`
	// Token, when set, is required of every client of the embedded server
	// (the dispatcher itself uses it); it is required to listen beyond
	// loopback.
	Token Secret `yaml:"token"`
}

// MaxPartitions bounds streams.partitions: each partition is a stream
// and a consumer per sink, and the partition is carried in the top bits
// of a delivery's origin (topology.Origin).
const MaxPartitions = 64

// Streams is the JetStream topology's tunables.
type Streams struct {
	// SubjectPrefix roots every subject: producers publish under
	// <prefix>.events.>.
	SubjectPrefix string `yaml:"subject_prefix"`
	// Partitions spreads the events over that many streams, each with
	// its own leader (docs/scaling.md); 1 is one stream, <prefix>.events.>.
	// Producers must publish with the same count.
	Partitions       int           `yaml:"partitions"`
	Replicas         int           `yaml:"replicas"`
	Storage          string        `yaml:"storage"` // file | memory
	MaxAge           time.Duration `yaml:"max_age"`
	MaxBytes         int64         `yaml:"max_bytes"`
	DuplicateWindow  time.Duration `yaml:"duplicate_window"`
	MaxEnvelopeBytes int           `yaml:"max_envelope_bytes"`
	DeadLetterMaxAge time.Duration `yaml:"dead_letter_max_age"`
}

// Dispatcher tunes the consuming side.
type Dispatcher struct {
	AckWait       time.Duration `yaml:"ack_wait"`
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	LogFormat     string        `yaml:"log_format"` // json | console
	LogLevel      string        `yaml:"log_level"`
}

// Admin serves /metrics, /healthz and /readyz, and the web console.
type Admin struct {
	Listen string `yaml:"listen"` // empty: not served
	// ProbeListen serves /healthz and /readyz alone, on a listener of
	// their own that slow or abusive clients of the admin and webhook
	// listeners cannot fill (empty: the probes are on admin.listen only).
	ProbeListen string `yaml:"probe_listen"`
	// TokenFile holds the admin token the console's replay and purge
	// require (else $CHAPAR_ADMIN_TOKEN; with neither they are disabled).
	TokenFile string  `yaml:"token_file"`
	Console   Console `yaml:"console"`
}

// Console is the web console under /console/ on the admin listener.
type Console struct {
	Enabled bool `yaml:"enabled"`
}

// AdminTokenEnv is the environment variable the admin token is read from
// when admin.token_file is not set.
const AdminTokenEnv = "CHAPAR_ADMIN_TOKEN"

// MinAdminTokenBytes is the shortest admin token accepted: a guessable
// token would be worse than none, as it reads as protection.
const MinAdminTokenBytes = 16

// Token is the admin token: admin.token_file's content (surrounding
// whitespace dropped) or else $CHAPAR_ADMIN_TOKEN; empty when neither is
// set. Errors name the key and the fix, never the token.
func (a Admin) Token(lookupEnv func(string) (string, bool)) (Secret, error) {
	var tok, from string
	if a.TokenFile != "" {
		raw, err := os.ReadFile(a.TokenFile)
		if err != nil {
			return "", fmt.Errorf("admin.token_file: %w; point it at a readable file holding the token, or unset it", err)
		}
		tok, from = strings.TrimSpace(string(raw)), "admin.token_file ("+a.TokenFile+")"
	} else if v, ok := lookupEnv(AdminTokenEnv); ok {
		tok, from = strings.TrimSpace(v), "$"+AdminTokenEnv
	}
	if from != "" && len(tok) < MinAdminTokenBytes {
		return "", fmt.Errorf("%s: the admin token is %d bytes; use at least %d random bytes, e.g. openssl rand -hex 32",
			from, len(tok), MinAdminTokenBytes)
	}
	return Secret(tok), nil
}

// ConsoleBeyondLoopback says whether the console is served where others
// than this host's users can reach it: admin.listen's host is not a
// loopback address or "localhost" (an empty host or 0.0.0.0 is every
// interface; a name other than localhost may resolve anywhere).
func (a Admin) ConsoleBeyondLoopback() bool {
	if !a.Console.Enabled || a.Listen == "" {
		return false
	}
	host, _, err := net.SplitHostPort(a.Listen)
	if err != nil {
		return true
	}
	if host == "localhost" {
		return false
	}
	ip := net.ParseIP(host)
	return ip == nil || !ip.IsLoopback()
}

// CheckConsoleToken refuses a console beyond loopback without the admin
// token: its pages show dead letters' envelopes and headers (user data),
// so there every page asks for the token (docs/console.md).
func (a Admin) CheckConsoleToken(tok Secret) error {
	if !a.ConsoleBeyondLoopback() || tok.Value() != "" {
		return nil
	}
	return fmt.Errorf("admin.console.enabled: the console is served beyond loopback (admin.listen %q) with no admin token, "+
		"so anyone reaching it could read dead letters' envelopes; set admin.token_file (or $%s) and every console page asks for it, "+
		"bind admin.listen to 127.0.0.1, or disable the console", a.Listen, AdminTokenEnv)
}

// Webhook serves the endpoint Divar Kenar calls back.
type Webhook struct {
	Listen string `yaml:"listen"` // empty: not served
	Path   string `yaml:"path"`
	// IdentificationKey is the static secret Kenar sends in Authorization.
	IdentificationKey Secret `yaml:"identification_key"`
	Source            string `yaml:"source"`
}

// Sink is one configured instance of a vendor: a vendor may appear several
// times, each with its own name and credentials (two Metrix apps, say).
type Sink struct {
	Name        string `yaml:"name"`
	Vendor      string `yaml:"vendor"`
	BaseURL     string `yaml:"base_url"`
	Concurrency int    `yaml:"concurrency"`
	// MaxAckPending bounds deliveries in flight across all replicas (the
	// consumer's max_ack_pending): at least replicas × concurrency.
	MaxAckPending int                   `yaml:"max_ack_pending"`
	Timeout       time.Duration         `yaml:"timeout"`
	Events        map[string]string     `yaml:"events"`
	Retry         retry.Policy          `yaml:"retry"`
	Breaker       retry.BreakerSettings `yaml:"breaker"`
	// Settings are the vendor's own keys (credentials, units); the vendor's
	// sink decodes and validates them.
	Settings yaml.Node `yaml:"settings"`
	// Batch, when set, sends several events in one vendor request, for
	// the vendors that can (chabok, metrix-gateway, webhook). Absent: one event per
	// request.
	Batch *Batch `yaml:"batch"`
	// RateLimit paces the sink's requests (absent: no limit).
	RateLimit *RateLimit `yaml:"rate_limit"`
	// Order, when set, delivers events with the same key in publish
	// order (absent: events are delivered concurrently, in any order).
	Order *Order `yaml:"order"`
	// Start is where a sink added to a running deployment begins: "new"
	// (or absent) for the events published from then on, or an RFC 3339
	// time for the events stored since then that the stream still holds.
	// It applies only when the sink's consumers are created, at its first
	// start; changing it later changes nothing.
	Start string `yaml:"start"`
}

// StartTime is Start as a time: zero for new events. Validate rejects a
// Start it cannot read.
func (s Sink) StartTime() time.Time {
	t, _ := parseStart(s.Start)
	return t
}

func parseStart(v string) (time.Time, error) {
	if v == "" || v == "new" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339, v)
}

// RateLimit is a sink's pace: at most PerSecond requests a second, with
// bursts of Burst. It is per replica: with N replicas sharing a vendor
// quota of Q requests a second, set per_second to Q/N. A 429 lowers the
// pace (halving it, down to a tenth) and it climbs back while the vendor
// accepts (a twentieth of per_second each second): additive increase,
// multiplicative decrease.
type RateLimit struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

// Batch is a sink's batching: a request leaves with max_items events, or
// with what came within max_wait of the first, whichever is first.
type Batch struct {
	MaxItems int           `yaml:"max_items"`
	MaxWait  time.Duration `yaml:"max_wait"`
}

// Route sends events matching all its conditions to its sinks. Empty
// conditions match everything.
type Route struct {
	Types []string `yaml:"types"`
	// Names are event names or path.Match patterns (order_*).
	Names []string `yaml:"names"`
	Sinks []string `yaml:"sinks"`
}

// Secret is a credential: it prints as [redacted] so it cannot reach a log.
type Secret string

func (Secret) String() string { return "[redacted]" }

// MarshalText keeps secrets out of JSON and YAML dumps too.
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// Value is the secret itself, for the one place that sends it.
func (s Secret) Value() string { return string(s) }

// Load reads, expands, defaults and validates the file at path.
func Load(file string) (*Config, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	cfg, err := Parse(raw, os.LookupEnv)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", file, err)
	}
	return cfg, nil
}

// Parse is Load on bytes; lookupEnv resolves ${VAR} references.
func Parse(raw []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	cfg, err := Check(raw, lookupEnv)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// Default is the configuration with no file: an embedded JetStream on
// 127.0.0.1:4222 and no sinks.
func Default() *Config {
	return &Config{
		NATS: NATS{
			Name:     "chapar-dispatcher",
			Timeout:  5 * time.Second,
			Embedded: Embedded{Listen: "127.0.0.1:4222", DataDir: "chapar-data"},
		},
		Streams: Streams{
			SubjectPrefix:   "chapar",
			Partitions:      1,
			Replicas:        1,
			Storage:         "file",
			MaxAge:          7 * 24 * time.Hour,
			DuplicateWindow: 10 * time.Minute,
			// Leaves PayloadHeadroom below a stock NATS server's 1 MiB
			// max_payload, for the headers of retries and dead letters.
			MaxEnvelopeBytes: envelope.DefaultMaxBytes - PayloadHeadroom,
			DeadLetterMaxAge: 30 * 24 * time.Hour,
		},
		Dispatcher: Dispatcher{
			AckWait:       30 * time.Second,
			ShutdownGrace: 20 * time.Second,
			LogFormat:     "json",
			LogLevel:      "info",
		},
		Webhook:      Webhook{Path: "/webhooks/kenar", Source: "divar-kenar"},
		Admin:        Admin{Listen: "127.0.0.1:9090"},
		SinkDefaults: builtinSinkDefaults(),
	}
}

// builtinSinkDefaults are the values of the sink keys that neither a sink
// nor sink_defaults writes.
func builtinSinkDefaults() SinkDefaults {
	return SinkDefaults{
		Concurrency:   8,
		MaxAckPending: 1000,
		Timeout:       10 * time.Second,
		Retry:         retry.DefaultPolicy(),
		Breaker:       retry.DefaultBreakerSettings(),
	}
}

// resolveSinks decodes each sink over the resolved sink_defaults, so a key
// the sink writes keeps its value (zero included) and a key it leaves out
// is inherited. cfg.SinkDefaults already holds sink_defaults decoded over
// the built-in defaults; doc is the expanded document.
//
// Two built-in defaults depend on other keys, and only apply when neither
// the sink nor sink_defaults writes the key: max_ack_pending is at least
// concurrency, and retry.max_interval at least retry.initial_interval.
func (c *Config) resolveSinks(doc *yaml.Node) error {
	top := doc
	if top.Kind == yaml.DocumentNode && len(top.Content) == 1 {
		top = top.Content[0]
	}
	dflt := written(mapValue(top, "sink_defaults"))
	derive := func(wrote map[string]bool, concurrency int, maxAckPending *int, p *retry.Policy) {
		if !wrote["max_ack_pending"] {
			*maxAckPending = max(*maxAckPending, concurrency)
		}
		if !wrote["retry.max_interval"] {
			p.MaxInterval = max(p.MaxInterval, p.InitialInterval)
		}
	}
	d := &c.SinkDefaults
	derive(dflt, d.Concurrency, &d.MaxAckPending, &d.Retry)

	seq := mapValue(top, "sinks")
	if seq == nil || seq.Kind != yaml.SequenceNode {
		return nil // no sinks, or the decode above already refused them
	}
	c.inherited = map[string]string{}
	var errs []error
	for i, item := range seq.Content {
		if i >= len(c.Sinks) {
			break
		}
		s := Sink{
			Concurrency:   d.Concurrency,
			MaxAckPending: d.MaxAckPending,
			Timeout:       d.Timeout,
			Retry:         d.Retry,
			Breaker:       d.Breaker,
		}
		if err := item.Decode(&s); err != nil {
			// The strict decode above caught what a person would write;
			// go on with what decoded, so the other keys are checked.
			errs = append(errs, fmt.Errorf("sinks[%d]: %w", i, err))
		}
		own := written(item)
		both := map[string]bool{}
		for k := range own {
			both[k] = true
		}
		for k := range dflt {
			both[k] = true
			if !own[k] {
				c.inherited[fmt.Sprintf("sinks[%d].%s", i, k)] = "sink_defaults." + k
			}
		}
		derive(both, s.Concurrency, &s.MaxAckPending, &s.Retry)
		if s.Batch != nil && !both["max_ack_pending"] {
			// Room for a batch in every request slot and one filling.
			s.MaxAckPending = max(s.MaxAckPending, s.Batch.MaxItems*(s.Concurrency+1))
		}
		c.Sinks[i] = s
	}
	return errors.Join(errs...)
}

// mapValue is the value of key in the mapping n, or nil.
func mapValue(n *yaml.Node, key string) *yaml.Node {
	n = unalias(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key {
			return unalias(n.Content[i+1])
		}
	}
	return nil
}

func unalias(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	return n
}

// written lists the keys a mapping writes, nested ones dotted
// (retry.max_attempts), with aliases and << merges followed.
func written(n *yaml.Node) map[string]bool {
	keys := map[string]bool{}
	var visit func(n *yaml.Node, at string)
	visit = func(n *yaml.Node, at string) {
		n = unalias(n)
		if n == nil || n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i].Value, n.Content[i+1]
			if n.Content[i].ShortTag() == "!!merge" {
				if v = unalias(v); v != nil && v.Kind == yaml.SequenceNode {
					for _, m := range v.Content {
						visit(m, at)
					}
				} else {
					visit(v, at)
				}
				continue
			}
			if at != "" {
				k = at + "." + k
			}
			keys[k] = true
			visit(v, k)
		}
	}
	visit(n, "")
	return keys
}

// Validate names every problem with its key and the fix.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
	}
	if c.NATS.URL == "" && c.NATS.Embedded.Listen == "" {
		bad("nats.embedded.listen", "set a host:port for the embedded server, or set nats.url")
	}
	if c.NATS.URL == "" && c.NATS.Embedded.DataDir == "" {
		bad("nats.embedded.data_dir", "set a directory for the embedded JetStream store")
	}
	if c.NATS.URL == "" && c.NATS.Embedded.Token == "" && !loopback(c.NATS.Embedded.Listen) {
		bad("nats.embedded.listen", "%q accepts clients from other hosts, and the embedded server has no credentials; "+
			"set nats.embedded.token (e.g. ${CHAPAR_NATS_TOKEN}), or listen on 127.0.0.1", c.NATS.Embedded.Listen)
	}
	if c.NATS.TLS.CertFile != "" && c.NATS.TLS.KeyFile == "" {
		bad("nats.tls.key_file", "is required with nats.tls.cert_file")
	}
	if c.NATS.Creds != "" && c.NATS.NKeyFile != "" {
		bad("nats.creds_file", "use either creds_file or nkey_file, not both")
	}
	if !regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`).MatchString(c.Streams.SubjectPrefix) {
		bad("streams.subject_prefix", "%q is not a NATS subject prefix; use tokens like chapar or acme.chapar", c.Streams.SubjectPrefix)
	}
	if n := c.Streams.Partitions; n < 1 || n > MaxPartitions {
		bad("streams.partitions", "is %d; use 1 (one events stream) up to %d, e.g. the number of NATS servers (docs/scaling.md)", n, MaxPartitions)
	}
	if r := c.Streams.Replicas; r != 1 && r != 3 && r != 5 {
		bad("streams.replicas", "is %d; use 1 (single server) or 3 or 5 (cluster)", r)
	}
	if s := c.Streams.Storage; s != "file" && s != "memory" {
		bad("streams.storage", "is %q; use file or memory", s)
	}
	if c.Streams.MaxEnvelopeBytes < 1024 {
		bad("streams.max_envelope_bytes", "is %d; use at least 1024 (default 983040)", c.Streams.MaxEnvelopeBytes)
	}
	if c.Streams.DuplicateWindow <= 0 {
		bad("streams.duplicate_window", "must be positive, e.g. 10m")
	}
	if c.Dispatcher.AckWait < time.Second {
		bad("dispatcher.ack_wait", "must be at least 1s, e.g. 30s")
	}
	if w, a := c.Streams.DuplicateWindow, c.Dispatcher.AckWait; w > 0 && w <= a {
		bad("streams.duplicate_window", "is %s, not more than dispatcher.ack_wait (%s): a message redelivered after ack_wait "+
			"would be published again after the window and not de-duplicated; set streams.duplicate_window above "+
			"dispatcher.ack_wait (several times it, e.g. 10m) or lower dispatcher.ack_wait", w, a)
	}
	if f := c.Dispatcher.LogFormat; f != "json" && f != "console" {
		bad("dispatcher.log_format", "is %q; use json or console", f)
	}
	if c.Admin.Console.Enabled && c.Admin.Listen == "" {
		bad("admin.console.enabled", "the console is served on the admin listener; set admin.listen (e.g. 127.0.0.1:9090) or disable the console")
	}
	if c.Webhook.Listen != "" && c.Webhook.IdentificationKey == "" {
		bad("kenar_webhook.identification_key", "is required when kenar_webhook.listen is set; set it to ${KENAR_IDENTIFICATION_KEY}")
	}
	d := c.SinkDefaults
	reported := map[string]bool{} // sink_defaults errors, to report each once
	for _, err := range sinkKeyErrors("sink_defaults", d.Concurrency, d.MaxAckPending, d.Timeout, d.Retry, d.Breaker) {
		reported[err.Error()] = true
		errs = append(errs, err)
	}
	names := map[string]bool{}
	for i, s := range c.Sinks {
		at := fmt.Sprintf("sinks[%d]", i)
		switch {
		case !envelope.IsSinkName(s.Name):
			bad(at+".name", "%q must be lower-case letters, digits, - or _ (it names a JetStream consumer)", s.Name)
		case names[s.Name]:
			bad(at+".name", "%q is used by another sink; names must be unique", s.Name)
		}
		names[s.Name] = true
		if s.Vendor == "" {
			bad(at+".vendor", "is required: the kind of sink (docs/sinks.md lists the vendors; an unknown one is reported with the list when the sinks are built)")
		}
		for _, err := range sinkKeyErrors(at, s.Concurrency, s.MaxAckPending, s.Timeout, s.Retry, s.Breaker) {
			key, msg, _ := strings.Cut(err.Error(), ": ")
			if from, ok := c.inherited[key]; ok {
				if reported[from+": "+msg] {
					continue // the same problem, reported at sink_defaults
				}
				err = fmt.Errorf("%w (the value is inherited from %s)", err, from)
			}
			errs = append(errs, err)
		}
		if b := s.Batch; b != nil {
			errs = append(errs, batchErrors(at, *b, s.MaxAckPending, c.Dispatcher.AckWait)...)
		}
		if rl := s.RateLimit; rl != nil {
			if rl.PerSecond <= 0 {
				bad(at+".rate_limit.per_second", "is %g; it must be positive, e.g. 50 (requests a second, per replica)", rl.PerSecond)
			}
			if rl.Burst < 1 {
				bad(at+".rate_limit.burst", "is %d; it must be at least 1, e.g. 10", rl.Burst)
			}
		}
		if o := s.Order; o != nil {
			errs = append(errs, orderErrors(at, *o)...)
			if s.Batch != nil {
				bad(at+".order", "cannot be combined with batch: a batch is one request for many keys, so one "+
					"event's retry would hold back every key in it; remove batch or order")
			}
		}
		if t, err := parseStart(s.Start); err != nil {
			bad(at+".start", "is %q; it must be new (the events published from the sink's creation on) or an RFC 3339 time "+
				"such as 2026-01-02T15:04:05Z (the events stored since then)", s.Start)
		} else if t.After(time.Now()) {
			bad(at+".start", "is %s, in the future; use new for the events published from the sink's creation on", s.Start)
		}
		if err := baseURLError(at+".base_url", s.BaseURL); err != nil {
			errs = append(errs, err)
		}
	}
	known := map[string]bool{}
	for _, t := range envelope.Types() {
		known[t] = true
	}
	for i, r := range c.Routes {
		at := fmt.Sprintf("routes[%d]", i)
		if len(r.Sinks) == 0 {
			bad(at+".sinks", "is empty; name at least one sink")
		}
		for j, s := range r.Sinks {
			if !names[s] {
				bad(fmt.Sprintf("%s.sinks[%d]", at, j), "%q is not a configured sink", s)
			}
		}
		for j, t := range r.Types {
			if !known[t] {
				bad(fmt.Sprintf("%s.types[%d]", at, j), "%q is not an event type; one of %s", t, strings.Join(envelope.Types(), ", "))
			}
		}
		for j, n := range r.Names {
			if _, err := path.Match(n, ""); err != nil {
				bad(fmt.Sprintf("%s.names[%d]", at, j), "%q is not a valid pattern: %v", n, err)
			}
		}
	}
	return errors.Join(errs...)
}

// sinkKeyErrors validates the keys a sink can inherit, under the key
// prefix at (sinks[0] or sink_defaults).
func sinkKeyErrors(at string, concurrency, maxAckPending int, timeout time.Duration, p retry.Policy, b retry.BreakerSettings) []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.%s: "+format, append([]any{at, key}, args...)...))
	}
	if concurrency < 1 || concurrency > 1024 {
		bad("concurrency", "is %d; use 1 to 1024", concurrency)
	}
	if maxAckPending < concurrency {
		bad("max_ack_pending", "is %d; it must be at least concurrency (%d), and replicas × concurrency to keep every replica busy", maxAckPending, concurrency)
	}
	if timeout <= 0 {
		bad("timeout", "is %s; it must be positive, e.g. 10s", timeout)
	}
	errs = append(errs, p.Validate(at+".retry")...)
	// What retry.Policy.Validate leaves to its callers: a zero cap would
	// retry at once on a Retry-After, and a negative bound reads as none.
	if p.MaxElapsed < 0 {
		bad("retry.max_elapsed", "is %s; use 0 (no bound) or a positive duration, e.g. 24h", p.MaxElapsed)
	}
	if p.MaxRetryAfter <= 0 {
		bad("retry.max_retry_after", "is %s; it must be positive, e.g. 15m", p.MaxRetryAfter)
	}
	errs = append(errs, b.Validate(at+".breaker")...)
	if b.Interval < 0 {
		bad("breaker.interval", "is %s; use 0 (never clear the failure count) or a positive duration, e.g. 1m", b.Interval)
	}
	return errs
}

// MaxBatchItems bounds batch.max_items whatever the vendor: a vendor's own
// limit may be lower (Chabok's trackBulk takes 1,000), and the sink says so.
const MaxBatchItems = 10_000

// batchErrors validates a sink's batch key.
func batchErrors(at string, b Batch, maxAckPending int, ackWait time.Duration) []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s.batch.%s: "+format, append([]any{at, key}, args...)...))
	}
	if b.MaxItems < 1 || b.MaxItems > MaxBatchItems {
		bad("max_items", "is %d; use 1 to %d, e.g. 500 (remove batch to send one event per request)", b.MaxItems, MaxBatchItems)
	}
	switch {
	case b.MaxWait <= 0:
		bad("max_wait", "is %s; it must be positive, e.g. 50ms", b.MaxWait)
	case ackWait > 0 && b.MaxWait > ackWait/4:
		bad("max_wait", "is %s; events wait for their batch with their ack timer running, so keep it under a quarter of dispatcher.ack_wait (%s), e.g. 50ms", b.MaxWait, ackWait)
	}
	if b.MaxItems >= 1 && maxAckPending < b.MaxItems {
		errs = append(errs, fmt.Errorf("%s.max_ack_pending: is %d, less than batch.max_items (%d): no batch could fill; "+
			"set it to at least batch.max_items × (concurrency + 1), or leave it out to have that", at, maxAckPending, b.MaxItems))
	}
	return errs
}

// CheckMaxPayload checks, once connected, that the NATS server's
// max_payload leaves room above streams.max_envelope_bytes for the headers
// and for the dead-letter record that wraps an envelope.
func CheckMaxPayload(streams Streams, maxPayload int64) error {
	if maxPayload <= 0 {
		return fmt.Errorf("streams.max_envelope_bytes: cannot be checked: the NATS server's max_payload is %d (not connected?); check after connecting", maxPayload)
	}
	if limit := maxPayload - PayloadHeadroom; int64(streams.MaxEnvelopeBytes) > limit {
		return fmt.Errorf("streams.max_envelope_bytes: is %d, but the NATS server's max_payload is %d and Chapar needs %d bytes of it "+
			"above the envelope (headers, dead-letter record); set streams.max_envelope_bytes to at most %d, "+
			"or raise max_payload on the server to at least %d",
			streams.MaxEnvelopeBytes, maxPayload, PayloadHeadroom, max(limit, 0), int64(streams.MaxEnvelopeBytes)+PayloadHeadroom)
	}
	return nil
}

// PayloadHeadroom is the room CheckMaxPayload keeps between the largest
// envelope and the server's max_payload: 64 KiB.
const PayloadHeadroom = 64 << 10

var reference = regexp.MustCompile(`\$\{([^}]*)\}`)

// walk visits every node under n with its key path (sinks[0].settings.app_id).
func walk(n *yaml.Node, at string, fn func(n *yaml.Node, at string) error) error {
	if err := fn(n, at); err != nil {
		return err
	}
	for i, c := range n.Content {
		key := at
		switch n.Kind {
		case yaml.SequenceNode:
			key = fmt.Sprintf("%s[%d]", at, i)
		case yaml.MappingNode:
			if i%2 == 0 {
				continue // a key, not a value
			}
			key = n.Content[i-1].Value
			if at != "" {
				key = at + "." + key
			}
		}
		if err := walk(c, key, fn); err != nil {
			return err
		}
	}
	return nil
}

// expand replaces ${VAR} and ${file:/path} in every scalar value, so a
// secret is never written into the file and never YAML-parsed as code.
//
// Each value a reference brought in is recorded in resolved (value → the
// reference), so that errors can say ${VAR} instead of echoing a secret.
func expand(root *yaml.Node, lookupEnv func(string) (string, bool), resolved map[string]string) error {
	var all []error // every reference that cannot be resolved, not only the first
	_ = walk(root, "", func(n *yaml.Node, at string) error {
		if n.Kind != yaml.ScalarNode {
			return nil
		}
		var errs []error
		out := reference.ReplaceAllStringFunc(n.Value, func(ref string) string {
			name := reference.FindStringSubmatch(ref)[1]
			if file, ok := strings.CutPrefix(name, "file:"); ok {
				b, err := os.ReadFile(file)
				if err != nil {
					errs = append(errs, fmt.Errorf("%s: cannot read secret file: %w", at, err))
					return ""
				}
				v := strings.TrimSpace(string(b))
				resolved[v] = ref
				return v
			}
			v, ok := lookupEnv(name)
			if !ok {
				errs = append(errs, fmt.Errorf("%s: environment variable %s is not set; export it or remove the reference", at, name))
			}
			resolved[v] = ref
			return v
		})
		all = append(all, errs...)
		if out != n.Value {
			n.Value = out
			n.Tag = "!!str"
			n.Style = yaml.DoubleQuotedStyle
		}
		return nil
	})
	return errors.Join(all...)
}

// candidate is a key at a line, and its value when it is a scalar.
type candidate struct{ key, value string }

// lineCandidates lists the keys at each line, in order: a flow mapping
// ({a: 1, b: x}) has several on one line.
func lineCandidates(root *yaml.Node) map[int][]candidate {
	out := map[int][]candidate{}
	_ = walk(root, "", func(n *yaml.Node, at string) error {
		if at != "" {
			c := candidate{key: at}
			if n.Kind == yaml.ScalarNode {
				c.value = n.Value
			}
			out[n.Line] = append(out[n.Line], c)
		}
		return nil
	})
	return out
}

var (
	unknownField = regexp.MustCompile(`field (\S+) not found in type`)
	badValue     = regexp.MustCompile("cannot unmarshal \\S+ `([^`]*)`")
)

// pick is the key a yaml error at a line is about: the only one, or the
// one whose name or value the message quotes.
func pick(cs []candidate, msg string) (string, bool) {
	switch {
	case len(cs) == 0:
		return "", false
	case len(cs) == 1:
		return cs[0].key, true
	}
	if m := unknownField.FindStringSubmatch(msg); m != nil {
		for _, c := range cs {
			if c.key == m[1] || strings.HasSuffix(c.key, "."+m[1]) {
				return c.key, true
			}
		}
	}
	if m := badValue.FindStringSubmatch(msg); m != nil {
		v, cut := strings.CutSuffix(m[1], "...") // yaml shortens long values
		for _, c := range cs {
			if c.value == v || cut && strings.HasPrefix(c.value, v) {
				return c.key, true
			}
		}
	}
	return cs[len(cs)-1].key, true
}

// nameKeys rewrites yaml's "line N: …" decode errors to name the key at
// that line, which is what a person fixing the file looks for.
//
// lines maps each key to its line in the file as written (the re-encoded
// text's lines differ), to say where the key is.
func nameKeys(err error, keys map[int][]candidate, lines map[string]int) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		msgs[i] = m
		var line int
		if _, scanErr := fmt.Sscanf(m, "line %d:", &line); scanErr == nil {
			if k, ok := pick(keys[line], m); ok {
				_, rest, _ := strings.Cut(m, ": ")
				msgs[i] = k + ": " + rest
				if l, ok := lines[k]; ok {
					msgs[i] = fmt.Sprintf("%s: line %d: %s", k, l, rest)
				}
			}
		}
		if strings.Contains(m, " not found in type ") {
			msgs[i] += "; no such key: check its spelling and level (configs/chapar.example.yaml shows every key)"
		}
		if strings.HasSuffix(m, "into time.Duration") {
			msgs[i] += "; write a duration with its unit, e.g. 0s, 500ms, 10s or 5m"
		}
	}
	return fmt.Errorf("config errors:\n  %s", strings.Join(msgs, "\n  "))
}

// SettingsKey is the config path of a sink's vendor settings, for errors.
func SettingsKey(i int) string { return fmt.Sprintf("sinks[%d].settings", i) }
