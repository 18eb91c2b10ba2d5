package config

import (
	"errors"
	"fmt"
	"net"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/chapar-dev/chapar/internal/dataschema"
	"github.com/chapar-dev/chapar/internal/filter"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// problems collects a section's errors, each naming its key.
type problems struct{ errs []error }

func (p *problems) add(key, format string, args ...any) {
	p.errs = append(p.errs, fmt.Errorf("%s: "+format, append([]any{key}, args...)...))
}

func (p *problems) addErr(errs ...error) {
	for _, err := range errs {
		if err != nil {
			p.errs = append(p.errs, err)
		}
	}
}

// Validate names every problem with its key and the fix, section by
// section; what it only warns about, Warnings lists. It checks everything
// dispatcher run needs of the file's own keys before it serves (the
// vendors' settings and the admin token are checked by their owners, and
// internal/app runs all of them as one validator).
func (c *Config) Validate() error {
	var p problems
	c.warnings = nil
	c.validateNATS(&p)
	c.validateStreams(&p)
	c.validateDispatcher(&p)
	c.validateAdmin(&p)
	c.validateWebhook(&p)
	c.validateOpsEvents(&p)
	names := c.validateSinks(&p)
	c.validateRoutes(&p, names)
	_, err := dataschema.Compile(c.DataSchemas)
	p.addErr(err)
	return errors.Join(p.errs...)
}

// Warnings are what the last Validate found doubtful but not wrong, each
// naming its key, never a value.
func (c *Config) Warnings() []string { return append(slices.Clip(c.renamed), c.warnings...) }

func (c *Config) validateNATS(p *problems) {
	n := c.NATS
	if n.URL == "" {
		e := n.Embedded
		if e.Listen == "" {
			p.add("nats.embedded.listen", "set a host:port for the embedded server, or set nats.url")
		} else if err := listenError("nats.embedded.listen", e.Listen); err != nil {
			p.addErr(err)
		} else if e.Token == "" && !loopback(e.Listen) {
			p.add("nats.embedded.listen", "%q accepts clients from other hosts, and the embedded server has no credentials; "+
				"set nats.embedded.token (e.g. ${CHAPAR_NATS_TOKEN}), or listen on 127.0.0.1", e.Listen)
		}
		if e.DataDir == "" {
			p.add("nats.embedded.data_dir", "set a directory for the embedded JetStream store")
		}
	}
	if n.TLS.CertFile != "" && n.TLS.KeyFile == "" {
		p.add("nats.tls.key_file", "is required with nats.tls.cert_file")
	}
	if n.Creds != "" && n.NKeyFile != "" {
		p.add("nats.creds_file", "use either creds_file or nkey_file, not both")
	}
	if n.Timeout <= 0 {
		// Negative, nats.go refuses it at connect with "nats: timeout
		// invalid", naming no key; 0 would dial without a deadline.
		p.add("nats.connect_timeout", "is %s; use a positive duration, e.g. 5s (the default)", n.Timeout)
	}
}

var subjectPrefix = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

func (c *Config) validateStreams(p *problems) {
	s := c.Streams
	if !subjectPrefix.MatchString(s.SubjectPrefix) {
		p.add("streams.subject_prefix", "%q is not a NATS subject prefix; use tokens like chapar or acme.chapar", s.SubjectPrefix)
	}
	if n := s.Partitions; n < 1 || n > MaxPartitions {
		p.add("streams.partitions", "is %d; use 1 (one events stream) up to %d, e.g. the number of NATS servers (docs/scaling.md)", n, MaxPartitions)
	}
	if r := s.Replicas; r != 1 && r != 3 && r != 5 {
		p.add("streams.replicas", "is %d; use 1 (single server) or 3 or 5 (cluster)", r)
	}
	if st := s.Storage; st != "file" && st != "memory" {
		p.add("streams.storage", "is %q; use file or memory", st)
	}
	if s.MaxEnvelopeBytes < 1024 {
		p.add("streams.max_envelope_bytes", "is %d; use at least 1024 (default 983040)", s.MaxEnvelopeBytes)
	}
	if s.DuplicateWindow <= 0 {
		p.add("streams.duplicate_window", "must be positive, e.g. 10m")
	}
	if w, a := s.DuplicateWindow, c.Dispatcher.AckWait; w > 0 && w <= a {
		p.add("streams.duplicate_window", "is %s, not more than dispatcher.ack_wait (%s): a message redelivered after ack_wait "+
			"would be published again after the window and not de-duplicated; set streams.duplicate_window above "+
			"dispatcher.ack_wait (several times it, e.g. 10m) or lower dispatcher.ack_wait", w, a)
	}
	// JetStream refuses a stream whose max_age is negative, or shorter
	// than its duplicate window (both of these streams have one).
	for _, a := range []struct {
		key, eg string
		age     time.Duration
	}{{"streams.max_age", "168h", s.MaxAge}, {"streams.dead_letter_max_age", "720h", s.DeadLetterMaxAge}} {
		switch {
		case a.age < 0:
			p.add(a.key, "is %s; use 0 (no limit) or a positive duration, e.g. %s", a.age, a.eg)
		case a.age > 0 && s.DuplicateWindow > 0 && a.age < s.DuplicateWindow:
			p.add(a.key, "is %s, shorter than streams.duplicate_window (%s), which JetStream refuses; "+
				"set it to at least streams.duplicate_window, e.g. %s, or 0 (no limit), or lower streams.duplicate_window", a.age, s.DuplicateWindow, a.eg)
		}
	}
	if s.RecordDeliveries && s.DeliveriesMaxAge < time.Minute {
		p.add("streams.deliveries_max_age", "is %s; use at least 1m, e.g. 168h (as streams.max_age), or set streams.record_deliveries: false "+
			"to keep no delivery records", s.DeliveriesMaxAge)
	}
}

func (c *Config) validateDispatcher(p *problems) {
	d := c.Dispatcher
	if d.AckWait < time.Second {
		p.add("dispatcher.ack_wait", "must be at least 1s, e.g. 30s")
	}
	if b := d.GCBudgetMiB; b != 0 && (b < 8 || b > 65536) {
		p.add("dispatcher.gc_budget_mib", "is %d; use 0 (Go's own pacing, GOGC) or 8 to 65536, e.g. 24", b)
	}
	if f := d.LogFormat; f != "json" && f != "console" {
		p.add("dispatcher.log_format", "is %q; use json or console", f)
	}
	// The logger's own parser, so that the two cannot disagree.
	if _, err := zapcore.ParseLevel(d.LogLevel); err != nil {
		p.add("dispatcher.log_level", "%q is not a level; use debug, info, warn or error", d.LogLevel)
	}
}

func (c *Config) validateAdmin(p *problems) {
	a := c.Admin
	if a.Listen != "" {
		p.addErr(listenError("admin.listen", a.Listen))
	}
	if a.ProbeListen != "" {
		p.addErr(listenError("admin.probe_listen", a.ProbeListen))
	}
	if a.Console.Enabled && a.Listen == "" {
		p.add("admin.console.enabled", "the console is served on the admin listener; set admin.listen (e.g. 127.0.0.1:9090) or disable the console")
	}
}

// MaxOpsEventsBuffer bounds ops_events.buffer, the operational events
// queue allocated at start.
const MaxOpsEventsBuffer = 100_000

func (c *Config) validateOpsEvents(p *problems) {
	o := c.OpsEvents
	if !(o.PerMinute > 0) {
		p.add("ops_events.per_minute", "is %v; it must be above 0 (the default is 30 events of each type a minute)", o.PerMinute)
	}
	if o.Burst < 1 {
		p.add("ops_events.burst", "is %d; it must be at least 1 (the default is 10)", o.Burst)
	}
	// The queue is allocated whole at start: a value past any need (a
	// typo's extra zeros) must not exhaust memory there.
	if o.Buffer < 1 || o.Buffer > MaxOpsEventsBuffer {
		p.add("ops_events.buffer", "is %d; use 1 to %d (the default is 1024)", o.Buffer, MaxOpsEventsBuffer)
	}
}

// webhookPath is a path ServeMux serves as written: segments of URL
// characters that need no escaping, none starting with a dot (no . or ..,
// which ServeMux would redirect), no empty ones; a trailing slash serves
// the subtree. A space or a { would be read as a method or a wildcard.
var webhookPath = regexp.MustCompile(`^/([A-Za-z0-9_~-][A-Za-z0-9._~-]*/?)*$`)

func (c *Config) validateWebhook(p *problems) {
	w := c.Webhook
	if w.Listen != "" {
		p.addErr(listenError("kenar_webhook.listen", w.Listen))
		if w.IdentificationKey == "" {
			p.add("kenar_webhook.identification_key", "is required when kenar_webhook.listen is set; set it to ${KENAR_IDENTIFICATION_KEY}")
		}
	}
	switch {
	case !strings.HasPrefix(w.Path, "/"):
		p.add("kenar_webhook.path", "%q must start with /; write the path Kenar calls, e.g. /webhooks/kenar", w.Path)
	case !webhookPath.MatchString(w.Path):
		p.add("kenar_webhook.path", "%q is not a path the webhook can be served at; use letters, digits, - _ . ~ between slashes, "+
			"e.g. /webhooks/kenar", w.Path)
	}
}

// validateSinks checks each sink and returns the configured names, for
// the routes.
func (c *Config) validateSinks(p *problems) map[string]bool {
	d := c.SinkDefaults
	reported := map[string]bool{} // sink_defaults errors, to report each once
	for _, err := range sinkKeyErrors("sink_defaults", d.Concurrency, d.MaxAckPending, d.Timeout, d.Retry, d.Breaker) {
		reported[err.Error()] = true
		p.addErr(err)
	}
	if len(c.Sinks) == 0 {
		// A deployment may start before its sinks are configured (a
		// default Helm install): it stores events, and a sink added later
		// can take them from a time with start.
		c.warnings = append(c.warnings, "sinks: none configured: events are stored (for streams.max_age) and delivered to no vendor; "+
			"add sinks and routes (configs/chapar.example.yaml shows them)")
	}
	names := map[string]bool{}
	for i, s := range c.Sinks {
		at := fmt.Sprintf("sinks[%d]", i)
		switch {
		case !envelope.IsSinkName(s.Name):
			p.add(at+".name", "%q must be lower-case letters, digits, - or _ (it names a JetStream consumer)", s.Name)
		case names[s.Name]:
			p.add(at+".name", "%q is used by another sink; names must be unique", s.Name)
		}
		names[s.Name] = true
		if s.Vendor == "" {
			p.add(at+".vendor", "is required: the kind of sink (docs/sinks.md lists the vendors; an unknown one is reported with the list when the sinks are built)")
		}
		for _, err := range sinkKeyErrors(at, s.Concurrency, s.MaxAckPending, s.Timeout, s.Retry, s.Breaker) {
			key, msg, _ := strings.Cut(err.Error(), ": ")
			if from, ok := c.inherited[key]; ok {
				if reported[from+": "+msg] {
					continue // the same problem, reported at sink_defaults
				}
				err = fmt.Errorf("%w (the value is inherited from %s)", err, from)
			}
			p.addErr(err)
		}
		c.validateSinkOptions(p, at, s)
		warning, err := baseURLCheck(at+".base_url", s.BaseURL)
		p.addErr(err)
		if warning != "" {
			c.warnings = append(c.warnings, warning)
		}
	}
	return names
}

// validateSinkOptions checks a sink's optional keys: batch, rate_limit,
// order and start.
func (c *Config) validateSinkOptions(p *problems, at string, s Sink) {
	if b := s.Batch; b != nil {
		p.addErr(batchErrors(at, *b, s.MaxAckPending, c.Dispatcher.AckWait)...)
	}
	if rl := s.RateLimit; rl != nil {
		if !(rl.PerSecond > 0) { // NaN too
			p.add(at+".rate_limit.per_second", "is %g; it must be positive, e.g. 50 (requests a second, per replica)", rl.PerSecond)
		}
		if rl.Burst < 1 {
			p.add(at+".rate_limit.burst", "is %d; it must be at least 1, e.g. 10", rl.Burst)
		}
	}
	if o := s.Order; o != nil {
		p.addErr(orderErrors(at, *o)...)
		if s.Batch != nil {
			p.add(at+".order", "cannot be combined with batch: a batch is one request for many keys, so one "+
				"event's retry would hold back every key in it; remove batch or order")
		}
	}
	if t, err := parseStart(s.Start); err != nil {
		p.add(at+".start", "is %q; it must be new (the events published from the sink's creation on) or an RFC 3339 time "+
			"such as 2026-01-02T15:04:05Z (the events stored since then)", s.Start)
	} else if t.After(time.Now()) {
		p.add(at+".start", "is %s, in the future; use new for the events published from the sink's creation on", s.Start)
	}
}

func (c *Config) validateRoutes(p *problems, names map[string]bool) {
	for i, r := range c.Routes {
		at := fmt.Sprintf("routes[%d]", i)
		if len(r.Sinks) == 0 {
			p.add(at+".sinks", "is empty; name at least one sink")
		}
		for j, s := range r.Sinks {
			if !names[s] {
				p.add(fmt.Sprintf("%s.sinks[%d]", at, j), "%q is not a configured sink", s)
			}
		}
		// Any type an envelope can carry: Chapar's, or a producer's own.
		// Which sinks can take it is checked with the vendors (internal/app).
		for j, t := range r.Types {
			if err := envelope.CheckType(t); err != nil {
				p.add(fmt.Sprintf("%s.types[%d]", at, j), "%q is not an event type: %v", t, err)
			}
		}
		for j, n := range r.Names {
			if _, err := path.Match(n, ""); err != nil {
				p.add(fmt.Sprintf("%s.names[%d]", at, j), "%q is not a valid pattern: %v", n, err)
			}
		}
		validateFilter(p, at+".filter", r.Filter)
	}
}

// validateFilter compiles a route's filter as the dispatcher will at
// start, so an expression that cannot run is refused before it is.
func validateFilter(p *problems, key, src string) {
	if src == "" {
		return
	}
	if strings.TrimSpace(src) == "" {
		p.add(key, "is empty; remove the key to match every event, or write a condition such as data.user.country == \"IR\"")
		return
	}
	if _, err := filter.Compile(src); err != nil {
		p.add(key, "%q does not compile: %v; a filter is a condition (expr-lang syntax) on %s "+
			"(see docs/sinks.md, \"Content filters\")", src, err, strings.Join(filter.Names(), ", "))
	}
}

// listenError checks a listener's address as net.Listen will read it: a
// host (empty for every interface) and a port number.
func listenError(key, addr string) error {
	const fix = "write it as host:port, e.g. 127.0.0.1:9090 (or :9090 for every interface)"
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s: %q is not a host:port; %s", key, addr, fix)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%s: %q is not a host:port: its port must be a number, 0 to 65535; %s", key, addr, fix)
	}
	return nil
}
