package config_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/configs"
	"github.com/chapar-dev/chapar/internal/config"
	"github.com/chapar-dev/chapar/internal/sinks"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestShippedConfigsLoad(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "kenar-token")
	if err := os.WriteFile(secret, []byte("tok-from-file\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile("../../configs/chapar.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	raw = []byte(strings.ReplaceAll(string(raw), "/run/secrets/kenar-token", secret))
	vars := map[string]string{
		"NATS_PASSWORD": "p", "NATS_TOKEN": "t", "KENAR_IDENTIFICATION_KEY": "idkey", "CHABOK_ACCESS_TOKEN": "ct",
		"METRIX_APP_ID": "app", "METRIX_DEV_KEY": "dk", "METRIX_API_KEY": "ak", "KENAR_API_KEY": "kk",
	}
	cfg, err := config.Parse(raw, env(vars))
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if len(cfg.Sinks) != 4 || cfg.Streams.Replicas != 3 || cfg.Sinks[3].Concurrency != 4 || cfg.Sinks[0].Concurrency != 8 {
		t.Errorf("example parsed to %+v", cfg)
	}
	if _, err := sinks.Build(cfg.Sinks); err != nil {
		t.Errorf("example sinks: %v", err)
	}
	// The demo's ${EMULATOR_*} and ${DEMO_*} come from the emulator (its
	// own test checks they are the ones it sets).
	demoVars := func(k string) (string, bool) {
		return "http://127.0.0.1:1", strings.HasPrefix(k, "EMULATOR_") || strings.HasPrefix(k, "DEMO_")
	}
	demo, err := config.Parse(configs.Demo(), demoVars)
	if err != nil {
		t.Fatalf("demo config: %v", err)
	}
	if got := demo.Sinks[0].Retry.InitialInterval; got != 200*time.Millisecond {
		t.Errorf("sink_defaults not applied: initial_interval %s", got)
	}
	if got := demo.Sinks[0].Retry.Multiplier; got != 2 {
		t.Errorf("built-in default not applied under sink_defaults: multiplier %v", got)
	}
}

func TestBadConfigNamesKeyAndFix(t *testing.T) {
	base := `
sinks:
  - name: chabok
    vendor: chabok
    settings:
      app_id: a
      access_token: t
routes:
  - sinks: [chabok]
`
	tests := []struct {
		name, yaml string
		env        map[string]string
		want       []string
	}{
		{"not YAML", "sinks: [", nil, []string{"not valid YAML"}},
		{"unknown key", "dispatcher:\n  concurency: 3\n", nil, []string{"concurency", "not found"}},
		{"ops events without a burst", base + "ops_events:\n  enabled: true\n  burst: 0\n", nil, []string{"ops_events.burst", "at least 1"}},
		{"a misspelt ops type in a route", strings.Replace(base, "  - sinks: [chabok]", "  - sinks: [chabok]\n    types: [chapar.ops.dead_letterd]", 1), nil,
			[]string{"routes[0].types[0]", "chapar.ops.dead_lettered"}},
		{"ops events without a pace", base + "ops_events:\n  per_minute: 0\n", nil, []string{"ops_events.per_minute", "above 0"}},
		{"missing env var", strings.Replace(base, "access_token: t", "access_token: ${CHABOK_TOKEN}", 1), nil,
			[]string{"sinks[0].settings.access_token", "CHABOK_TOKEN is not set"}},
		{"missing secret file", strings.Replace(base, "access_token: t", "access_token: ${file:/nonexistent/x}", 1), nil,
			[]string{"sinks[0].settings.access_token", "cannot read secret file"}},
		{"bad sink name", strings.Replace(base, "name: chabok", "name: Chabok Main", 1), nil, []string{"sinks[0].name"}},
		{"route to unknown sink", base + "  - sinks: [nope]\n", nil, []string{"routes[1].sinks[0]", `"nope" is not a configured sink`}},
		{"unknown type in route", base + "  - sinks: [chabok]\n    types: [chapar.click]\n", nil, []string{"routes[1].types[0]"}},
		{"bad duration", "dispatcher:\n  ack_wait: soon\n", nil, []string{"ack_wait"}},
		{"duration without a unit", "dispatcher:\n  ack_wait: 30\n", nil, []string{"dispatcher.ack_wait", "e.g. 0s, 500ms"}},
		{"a collector budget too small to do anything", "dispatcher:\n  gc_budget_mib: 4\n", nil, []string{"dispatcher.gc_budget_mib", "is 4; use 0", "8 to 65536"}},
		{"negative timeout", strings.Replace(base, "vendor: chabok", "vendor: chabok\n    timeout: -1s", 1), nil,
			[]string{"sinks[0].timeout", "must be positive"}},
		{"retry multiplier", strings.Replace(base, "vendor: chabok", "vendor: chabok\n    retry: {multiplier: 0.5}", 1), nil,
			[]string{"sinks[0].retry.multiplier"}},
		{"replicas", "streams:\n  replicas: 2\n", nil, []string{"streams.replicas", "use 1"}},
		{"no partitions", "streams:\n  partitions: 0\n", nil, []string{"streams.partitions", "is 0; use 1"}},
		{"too many partitions", "streams:\n  partitions: 65\n", nil, []string{"streams.partitions", "up to 64"}},
		{"webhook without key", "kenar_webhook:\n  listen: :8080\n", nil, []string{"kenar_webhook.identification_key"}},
		{"console without the admin listener", "admin:\n  listen: \"\"\n  console: {enabled: true}\n", nil,
			[]string{"admin.console.enabled", "set admin.listen"}},
		{"duplicate sink", strings.Replace(base, "routes:", "  - name: chabok\n    vendor: kenar\nroutes:", 1), nil,
			[]string{"sinks[1].name", "used by another sink"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tt.yaml), env(tt.env))
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestSinkSettingsAreValidatedAtStart(t *testing.T) {
	tests := []struct {
		name, settings, vendor string
		want                   []string
	}{
		{"chabok missing token", "{app_id: a}", "chabok", []string{"sinks[0].settings.access_token: is required"}},
		{"metrix typo", "{app_id: a, devkey: k}", "metrix-s2s", []string{"sinks[0].settings", "devkey"}},
		{"metrix time unit", "{app_id: a, dev_key: k, event_time_unit: us}", "metrix-s2s", []string{"event_time_unit"}},
		{"gateway missing both", "{}", "metrix-gateway", []string{"settings.app_id: is required", "settings.api_key: is required"}},
		{"kenar missing token", "{api_key: k}", "kenar", []string{"settings.access_token: is required"}},
		{"unknown vendor", "{}", "mixpanel", []string{"sinks[0].vendor", "mixpanel"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(fmt.Sprintf("sinks:\n  - name: s\n    vendor: %s\n    settings: %s\n", tt.vendor, tt.settings)), env(nil))
			if err != nil {
				t.Fatal(err)
			}
			_, err = sinks.Build(cfg.Sinks)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestSecretsNeverPrint(t *testing.T) {
	cfg, err := config.Parse([]byte("nats:\n  token: ${T}\n"), env(map[string]string{"T": "s3cr3t"}))
	if err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{fmt.Sprint(cfg.NATS.Token), fmt.Sprintf("%v %+v", cfg.NATS, cfg.NATS)} {
		if strings.Contains(out, "s3cr3t") {
			t.Errorf("secret printed: %s", out)
		}
	}
	if cfg.NATS.Token.Value() != "s3cr3t" {
		t.Error("secret lost")
	}
}

// flow writes key (dotted for nested: retry.jitter) with value as a YAML
// flow mapping entry: retry: {jitter: 0}.
func flow(key, value string) string {
	parent, leaf, nested := strings.Cut(key, ".")
	if !nested {
		return key + ": " + value
	}
	return parent + ": {" + leaf + ": " + value + "}"
}

// sinkKey reads one inheritable key of a parsed sink.
func sinkKey(s config.Sink, key string) any {
	return map[string]any{
		"concurrency":               s.Concurrency,
		"max_ack_pending":           s.MaxAckPending,
		"timeout":                   s.Timeout,
		"retry.initial_interval":    s.Retry.InitialInterval,
		"retry.multiplier":          s.Retry.Multiplier,
		"retry.jitter":              s.Retry.Jitter,
		"retry.max_interval":        s.Retry.MaxInterval,
		"retry.max_attempts":        s.Retry.MaxAttempts,
		"retry.max_elapsed":         s.Retry.MaxElapsed,
		"retry.max_retry_after":     s.Retry.MaxRetryAfter,
		"breaker.failure_threshold": s.Breaker.FailureThreshold,
		"breaker.open_timeout":      s.Breaker.OpenTimeout,
		"breaker.interval":          s.Breaker.Interval,
	}[key]
}

// A key written as 0 keeps 0, in a sink or in sink_defaults: it is either
// used as written or refused with its key and the fix, never silently
// replaced by a default.
func TestExplicitZeroIsKept(t *testing.T) {
	tests := []struct {
		key  string
		zero any
		// fix is what the error says when 0 is not allowed ("": allowed).
		fix string
	}{
		{"concurrency", 0, "use 1 to 1024"},
		{"max_ack_pending", 0, "at least concurrency"},
		{"timeout", time.Duration(0), "must be positive"},
		{"retry.initial_interval", time.Duration(0), "must be positive"},
		{"retry.multiplier", 0.0, "must be at least 1"},
		{"retry.jitter", 0.0, ""},
		{"retry.max_interval", time.Duration(0), "must be at least initial_interval"},
		{"retry.max_attempts", 0, ""},
		{"retry.max_elapsed", time.Duration(0), ""},
		{"retry.max_retry_after", time.Duration(0), "must be positive"},
		{"breaker.failure_threshold", uint32(0), "must be at least 1"},
		{"breaker.open_timeout", time.Duration(0), "must be positive"},
		{"breaker.interval", time.Duration(0), ""},
	}
	const sink = "  - name: s\n    vendor: chabok\n"
	for _, tt := range tests {
		for _, where := range []string{"sinks[0]", "sink_defaults"} {
			t.Run(where+"."+tt.key, func(t *testing.T) {
				zero := "0"
				if _, ok := tt.zero.(time.Duration); ok {
					zero = "0s"
				}
				doc := "sinks:\n" + sink + "    " + flow(tt.key, zero) + "\n"
				if where == "sink_defaults" {
					doc = "sink_defaults:\n  " + flow(tt.key, zero) + "\nsinks:\n" + sink
				}
				cfg, err := config.Parse([]byte(doc), env(nil))
				if tt.fix == "" {
					if err != nil {
						t.Fatalf("0 is allowed, got %v", err)
					}
					if got := sinkKey(cfg.Sinks[0], tt.key); got != tt.zero {
						t.Errorf("%s: 0 became %v", tt.key, got)
					}
					return
				}
				if err == nil {
					t.Fatalf("0 accepted: became %v", sinkKey(cfg.Sinks[0], tt.key))
				}
				for _, w := range []string{where + "." + tt.key + ": ", tt.fix} {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not say %q", err, w)
					}
				}
				if where == "sink_defaults" && strings.Contains(err.Error(), "sinks[0]."+tt.key) {
					t.Errorf("sink_defaults' mistake reported again at the sink: %v", err)
				}
			})
		}
	}
}

// A key a sink leaves out comes from sink_defaults, else the built-in
// default; a key it writes is its own.
func TestAbsentKeysAreInherited(t *testing.T) {
	defaults := `
sink_defaults:
  concurrency: 3
  max_ack_pending: 30
  timeout: 3s
  retry: {initial_interval: 3s, multiplier: 3, jitter: 0.03, max_interval: 3m, max_attempts: 3, max_elapsed: 3h, max_retry_after: 3m}
  breaker: {failure_threshold: 3, open_timeout: 3s, interval: 3m}
`
	fromDefaults := map[string]any{
		"concurrency": 3, "max_ack_pending": 30, "timeout": 3 * time.Second,
		"retry.initial_interval": 3 * time.Second, "retry.multiplier": 3.0, "retry.jitter": 0.03,
		"retry.max_interval": 3 * time.Minute, "retry.max_attempts": 3, "retry.max_elapsed": 3 * time.Hour,
		"retry.max_retry_after": 3 * time.Minute, "breaker.failure_threshold": uint32(3),
		"breaker.open_timeout": 3 * time.Second, "breaker.interval": 3 * time.Minute,
	}
	builtIn := map[string]any{
		"concurrency": 8, "max_ack_pending": 1000, "timeout": 10 * time.Second,
		"retry.initial_interval": 2 * time.Second, "retry.multiplier": 2.0, "retry.jitter": 0.3,
		"retry.max_interval": 10 * time.Minute, "retry.max_attempts": 25, "retry.max_elapsed": 24 * time.Hour,
		"retry.max_retry_after": 15 * time.Minute, "breaker.failure_threshold": uint32(5),
		"breaker.open_timeout": 15 * time.Second, "breaker.interval": time.Minute,
	}
	tests := []struct {
		name, yaml string
		want       map[string]any // every inheritable key
	}{
		{"nothing written: built-in", "sinks:\n  - {name: s, vendor: chabok}\n", builtIn},
		{"sink_defaults", defaults + "sinks:\n  - {name: s, vendor: chabok}\n", fromDefaults},
		{"sink_defaults partly: the rest built-in", "sink_defaults: {retry: {jitter: 0.5}}\nsinks:\n  - {name: s, vendor: chabok}\n",
			merge(builtIn, map[string]any{"retry.jitter": 0.5})},
		{"the sink's own over sink_defaults", defaults + "sinks:\n  - {name: s, vendor: chabok, timeout: 7s, retry: {max_attempts: 7}}\n",
			merge(fromDefaults, map[string]any{"timeout": 7 * time.Second, "retry.max_attempts": 7})},
		{"sink_defaults through an anchor", "sink_defaults: &d {timeout: 4s}\nsinks:\n  - {name: s, vendor: chabok, <<: *d, concurrency: 4}\n",
			merge(builtIn, map[string]any{"timeout": 4 * time.Second, "concurrency": 4})},
		// Defaults that follow another key: only when nobody writes them.
		{"built-in max_ack_pending follows concurrency", "sinks:\n  - {name: s, vendor: chabok, concurrency: 1024}\n",
			merge(builtIn, map[string]any{"concurrency": 1024, "max_ack_pending": 1024})},
		{"built-in max_interval follows initial_interval", "sinks:\n  - {name: s, vendor: chabok, retry: {initial_interval: 20m}}\n",
			merge(builtIn, map[string]any{"retry.initial_interval": 20 * time.Minute, "retry.max_interval": 20 * time.Minute})},
		{"max_interval follows initial_interval in sink_defaults", "sink_defaults: {retry: {initial_interval: 20m}}\nsinks:\n  - {name: s, vendor: chabok}\n",
			merge(builtIn, map[string]any{"retry.initial_interval": 20 * time.Minute, "retry.max_interval": 20 * time.Minute})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Parse([]byte(tt.yaml), env(nil))
			if err != nil {
				t.Fatal(err)
			}
			for key, want := range tt.want {
				if got := sinkKey(cfg.Sinks[0], key); got != want {
					t.Errorf("%s = %v, want %v", key, got, want)
				}
			}
		})
	}
}

func merge(base, over map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		out[k] = v
	}
	return out
}

// A sink that inherits a value its own keys make wrong is told where the
// value came from.
func TestInheritedValueErrorNamesItsSource(t *testing.T) {
	_, err := config.Parse([]byte("sink_defaults: {max_ack_pending: 16}\nsinks:\n  - {name: s, vendor: chabok, concurrency: 32}\n"), env(nil))
	if err == nil {
		t.Fatal("accepted max_ack_pending 16 under concurrency 32")
	}
	for _, w := range []string{"sinks[0].max_ack_pending: is 16", "inherited from sink_defaults.max_ack_pending"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}

func TestDuplicateWindowMustExceedAckWait(t *testing.T) {
	tests := []struct {
		name, yaml string
		ok         bool
	}{
		{"defaults", "", true},
		{"window above ack_wait", "streams: {duplicate_window: 31s}\ndispatcher: {ack_wait: 30s}\n", true},
		{"window equal to ack_wait", "streams: {duplicate_window: 30s}\ndispatcher: {ack_wait: 30s}\n", false},
		{"window below the default ack_wait", "streams: {duplicate_window: 10s}\n", false},
		{"ack_wait above the default window", "dispatcher: {ack_wait: 15m}\n", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := config.Parse([]byte(tt.yaml), env(nil))
			if tt.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range []string{"streams.duplicate_window:", "dispatcher.ack_wait", "set streams.duplicate_window above"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestCheckMaxPayload(t *testing.T) {
	tests := []struct {
		name        string
		envelope    int
		maxPayload  int64
		wantErrSays []string // nil: no error
	}{
		{"embedded server (8 MiB)", 1 << 20, 8 << 20, nil},
		{"exactly 64 KiB of room", 1<<20 - 64<<10, 1 << 20, nil},
		{"NATS default max_payload with the default envelope", 1 << 20, 1 << 20,
			[]string{"streams.max_envelope_bytes: is 1048576", "max_payload is 1048576", "at most 983040", "raise max_payload"}},
		{"one byte too many", 1<<20 - 64<<10 + 1, 1 << 20, []string{"at most 983040"}},
		{"not connected", 1 << 20, 0, []string{"streams.max_envelope_bytes", "max_payload is 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := config.CheckMaxPayload(config.Streams{MaxEnvelopeBytes: tt.envelope}, tt.maxPayload)
			if tt.wantErrSays == nil {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range tt.wantErrSays {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

func TestAdminToken(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := "0123456789abcdef0123"
	goodFile, shortFile := write("good", good+"\n"), write("short", "hunter2\n")
	for _, c := range []struct {
		name  string
		admin config.Admin
		env   map[string]string
		want  string
		err   []string // what the error says
	}{
		{"neither: mutations disabled", config.Admin{}, nil, "", nil},
		{"from the file, newline dropped", config.Admin{TokenFile: goodFile}, nil, good, nil},
		{"from the environment", config.Admin{}, map[string]string{config.AdminTokenEnv: good}, good, nil},
		{"the file wins over the environment", config.Admin{TokenFile: goodFile}, map[string]string{config.AdminTokenEnv: "other-token-0123456789"}, good, nil},
		{"unreadable file", config.Admin{TokenFile: filepath.Join(dir, "missing")}, nil, "", []string{"admin.token_file", "readable file"}},
		{"too short in a file", config.Admin{TokenFile: shortFile}, nil, "", []string{"admin.token_file", "7 bytes", "at least 16"}},
		{"too short in the environment", config.Admin{}, map[string]string{config.AdminTokenEnv: "hunter2"}, "", []string{"$CHAPAR_ADMIN_TOKEN", "at least 16"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.admin.Token(env(c.env))
			if len(c.err) == 0 {
				if err != nil || got.Value() != c.want {
					t.Fatalf("Token() = %q, %v; want %q", got.Value(), err, c.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted, token %q", got.Value())
			}
			for _, w := range c.err {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q shows the token", err)
			}
		})
	}
}

// The console beyond loopback needs the admin token (every page asks for
// it); on loopback, or disabled, it does not.
func TestConsoleBeyondLoopbackNeedsAToken(t *testing.T) {
	tok := config.Secret("0123456789abcdef0123")
	for _, c := range []struct {
		listen  string
		enabled bool
		token   config.Secret
		beyond  bool
		refused bool
	}{
		{"127.0.0.1:9090", true, "", false, false},
		{"[::1]:9090", true, "", false, false},
		{"localhost:9090", true, "", false, false},
		{":9090", true, "", true, true},
		{"0.0.0.0:9090", true, "", true, true},
		{"10.0.0.5:9090", true, "", true, true},
		{"admin.internal:9090", true, "", true, true},
		{":9090", true, tok, true, false},
		{":9090", false, "", false, false},
	} {
		a := config.Admin{Listen: c.listen, Console: config.Console{Enabled: c.enabled}}
		if got := a.ConsoleBeyondLoopback(); got != c.beyond {
			t.Errorf("%s (console %v): beyond loopback = %v, want %v", c.listen, c.enabled, got, c.beyond)
		}
		err := a.CheckConsoleToken(c.token)
		switch {
		case c.refused && (err == nil || !strings.Contains(err.Error(), "admin.console.enabled") || !strings.Contains(err.Error(), "admin.token_file")):
			t.Errorf("%s without a token: %v, want a refusal naming admin.console.enabled and admin.token_file", c.listen, err)
		case !c.refused && err != nil:
			t.Errorf("%s (console %v, token %v): %v", c.listen, c.enabled, c.token != "", err)
		}
		if err != nil && strings.Contains(err.Error(), tok.Value()) {
			t.Errorf("the error shows the token: %v", err)
		}
	}
}
