// Package config loads Chapar's one YAML file: it expands ${VAR} and
// ${file:/path} references (so secrets stay out of the file), fills
// defaults, and validates everything at start, naming each problem's key.
package config

import (
	"fmt"
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
	// DataSchemas are JSON Schemas (as YAML or JSON) of event types'
	// data, by type: an event whose data does not match its type's is
	// invalid (internal/dataschema).
	DataSchemas map[string]yaml.Node `yaml:"data_schemas"`
	// OpsEvents are the operational events a dispatcher publishes about
	// itself (docs/envelope.md#operational-events).
	OpsEvents OpsEvents `yaml:"ops_events"`

	// renamed are the keys the file writes under an old name
	// (deprecated.go), warned about with Validate's warnings.
	renamed []string

	// resolved maps each value a ${…} reference brought in to the
	// reference, for Redact.
	resolved map[string]string

	// inherited maps a sink's key to the sink_defaults key it was taken
	// from (sinks[0].timeout → sink_defaults.timeout), so that errors name
	// the line to fix. Parse fills it; a Config built in code has none.
	inherited map[string]string

	// warnings are what Validate found doubtful but not wrong.
	warnings []string

	// adminToken is the admin token ReadAdminToken read and checked.
	adminToken Secret
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

	// URLFrom says where URL came from, for errors: "" is nats.url, else
	// the flag or variable that set it (--server, $NATS_URL).
	URLFrom string `yaml:"-"`
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
	// FilterByRoute makes each sink's events consumer read only the
	// types its routes name (and events carrying destinations), so the
	// server never delivers a sink an event it cannot be routed (default
	// true). Off, every sink reads the whole stream and skips the rest.
	FilterByRoute bool `yaml:"filter_by_route"`
	// RecordDeliveries keeps what became of each delivery (delivered,
	// retrying, dead-lettered; when, attempts, status) for
	// DeliveriesMaxAge, for `dispatcher events show` (internal/deliveries).
	RecordDeliveries bool          `yaml:"record_deliveries"`
	DeliveriesMaxAge time.Duration `yaml:"deliveries_max_age"`
}

// Dispatcher tunes the consuming side.
type Dispatcher struct {
	AckWait       time.Duration `yaml:"ack_wait"`
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	LogFormat     string        `yaml:"log_format"` // json | console
	LogLevel      string        `yaml:"log_level"`
	// GCBudgetMiB is the memory the Go runtime may fill before its garbage
	// collector runs, while the live heap is small (internal/heapfloor):
	// CPU for a bounded amount of memory. 0 leaves it to Go (GOGC); so
	// does GOGC set in the environment.
	GCBudgetMiB int `yaml:"gc_budget_mib"`
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

// Webhook serves the endpoint Divar Kenar calls back.
type Webhook struct {
	Listen string `yaml:"listen"` // empty: not served
	Path   string `yaml:"path"`
	// IdentificationKey is the static secret Kenar sends in Authorization.
	IdentificationKey Secret `yaml:"identification_key"`
	Source            string `yaml:"source"`
}

// OpsEvents configures Chapar's operational events (chapar.ops.*: a dead
// letter, a breaker, a pause, ...), published as CloudEvents into the
// events stream so routes can send them to a sink (internal/opsevents).
type OpsEvents struct {
	// Enabled publishes them. Off by default: each is a message every
	// sink's consumer reads and skips, kept for streams.max_age, so a
	// deployment takes that on only when it asks.
	Enabled bool `yaml:"enabled"`
	// PerMinute and Burst are each type's token bucket, per replica: a
	// storm of dead letters yields Burst events, then PerMinute a minute,
	// and one chapar.ops.suppressed event counting the rest.
	PerMinute float64 `yaml:"per_minute"`
	Burst     int     `yaml:"burst"`
	// Buffer is how many events may wait to be published; past it they
	// are dropped and counted, so publishing never holds up delivery.
	Buffer int `yaml:"buffer"`
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
	// Filter is an expression over the envelope and its data that must be
	// true too (internal/filter); empty matches every event.
	Filter string   `yaml:"filter"`
	Sinks  []string `yaml:"sinks"`
}

// RouteTypes lists the event types the routes name, each once, in order:
// with Chapar's own, the only type labels of metrics (a producer's other
// types must not mint series).
func (c *Config) RouteTypes() []string {
	var out []string
	seen := map[string]bool{}
	for _, r := range c.Routes {
		for _, t := range r.Types {
			if !seen[t] {
				seen[t] = true
				out = append(out, t)
			}
		}
	}
	return out
}

// Secret is a credential: it prints as [redacted] so it cannot reach a log.
type Secret string

func (Secret) String() string { return "[redacted]" }

// MarshalText keeps secrets out of JSON and YAML dumps too.
func (Secret) MarshalText() ([]byte, error) { return []byte("[redacted]"), nil }

// Value is the secret itself, for the one place that sends it.
func (s Secret) Value() string { return string(s) }

// Parse reads, expands, defaults and validates a config's bytes; lookupEnv
// resolves ${VAR} references. (A process's config is read by
// internal/app, which also checks the vendors' settings and the admin
// token.)
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
			FilterByRoute:    true,
			RecordDeliveries: true,
			DeliveriesMaxAge: 7 * 24 * time.Hour,
		},
		Dispatcher: Dispatcher{
			AckWait:       30 * time.Second,
			ShutdownGrace: 20 * time.Second,
			GCBudgetMiB:   24,
			LogFormat:     "json",
			LogLevel:      "info",
		},
		Webhook:      Webhook{Path: "/webhooks/kenar", Source: "divar-kenar"},
		Admin:        Admin{Listen: "127.0.0.1:9090"},
		SinkDefaults: builtinSinkDefaults(),
		OpsEvents:    OpsEvents{PerMinute: 30, Burst: 10, Buffer: 1024},
	}
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

// SettingsKey is the config path of a sink's vendor settings, for errors.
func SettingsKey(i int) string { return fmt.Sprintf("sinks[%d].settings", i) }
