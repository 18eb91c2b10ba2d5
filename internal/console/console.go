// Package console is the operators' web console, served under /console/
// on the dispatcher's admin listener: each sink's state, the dead letters
// (listed, filtered, one by one), and replay and purge from a filter.
//
// Pages are server-rendered Go templates; htmx (vendored in static/,
// embedded) only refreshes the sinks table and a running job's progress,
// so every page works without JavaScript and on an air-gapped network.
// Dead letters are read, replayed and purged through the same dlq.Store
// calls the CLI makes, so a console replay keeps dlq replay's guarantees.
package console

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"sync"

	"go.uber.org/zap"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/metrics"
)

// Prefix is where the console is mounted on the admin listener.
const Prefix = "/console/"

// DeadLetters is what the console needs of the dead-letter store
// (*dlq.Store): streamed reads, one entry, and the replay and purge the
// CLI runs.
type DeadLetters interface {
	Each(ctx context.Context, f dlq.Filter, fn func(*dlq.Record) bool) error
	Get(ctx context.Context, seq uint64) (*dlq.Record, error)
	Replay(ctx context.Context, f dlq.Filter, o dlq.ReplayOptions) (dlq.ReplayResult, error)
	PurgeProgress(ctx context.Context, f dlq.Filter, progress func(int)) (int, error)
}

// SinkSource reports each configured sink's state (*metrics.SinkReport).
type SinkSource interface {
	Sinks(ctx context.Context) ([]metrics.SinkStatus, error)
}

// SinkPauses records an operator's pause or resumption of a sink for the
// whole deployment, as dispatcher sinks pause and resume do.
type SinkPauses interface {
	SetPaused(ctx context.Context, sink string, paused bool, by string) error
}

// Options configure a console.
type Options struct {
	DeadLetters DeadLetters
	Sinks       SinkSource
	// Pauses, if set, lets the sinks page pause and resume a sink (with
	// the admin token, as replay and purge).
	Pauses SinkPauses
	// Events, if set, looks events up (the events page); nil: delivery
	// records are off, and the page says so.
	Events Events
	// Token is the admin token replay and purge require; empty disables
	// them (the pages say so).
	Token  string
	Logger *zap.Logger
	// PageSize is how many dead letters a list page shows (default 50).
	PageSize int
	// KeepJobs is how many finished jobs stay viewable (default 50).
	KeepJobs int
	// RequireToken makes every page ask for Token (HTTP Basic, any user
	// name): set when the console is served beyond loopback, where its
	// pages would show dead letters' user data to anyone reaching it.
	RequireToken bool
	// Partitions is streams.partitions: a dead letter's partition is
	// shown only when there is more than one.
	Partitions int
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Console serves the pages. Replays and purges run as background jobs
// that outlive the request that started them, until Close.
type Console struct {
	opts     Options
	log      *zap.Logger
	tokenSum [sha256.Size]byte
	pages    map[string]*template.Template
	handler  http.Handler

	ctx    context.Context // jobs run under it; Close cancels it
	cancel context.CancelFunc
	wg     sync.WaitGroup
	jobs   jobs
	// waiting counts the dead letters of each sink (waiting.go).
	waiting waiting
}

// New builds a console. Its jobs stop when ctx ends or Close is called.
func New(ctx context.Context, o Options) (*Console, error) {
	if o.DeadLetters == nil || o.Sinks == nil {
		return nil, errors.New("console: DeadLetters and Sinks are required")
	}
	if o.RequireToken && o.Token == "" {
		return nil, errors.New("console: RequireToken without a Token would refuse every page")
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	if o.PageSize <= 0 {
		o.PageSize = 50
	}
	if o.KeepJobs <= 0 {
		o.KeepJobs = 50
	}
	pages, err := parsePages()
	if err != nil {
		return nil, err
	}
	c := &Console{opts: o, log: o.Logger.Named("console"), pages: pages, jobs: jobs{keep: o.KeepJobs}}
	if o.Token != "" {
		c.tokenSum = sha256.Sum256([]byte(o.Token))
	}
	c.ctx, c.cancel = context.WithCancel(ctx)
	c.handler = c.routes()
	return c, nil
}

// Close stops running jobs (a replay stops between two dead letters, as
// an interrupted dlq replay does) and waits for them.
func (c *Console) Close() {
	c.cancel()
	c.wg.Wait()
}

// Handler serves the console; mount it at Prefix.
func (c *Console) Handler() http.Handler { return c.handler }

// MutationsEnabled says whether replay and purge are possible (a token is
// configured).
func (c *Console) MutationsEnabled() bool { return c.opts.Token != "" }

// tokenOK compares a presented token with the configured one in constant
// time: both are hashed first, so neither the content nor the length of
// the token leaks through timing.
func (c *Console) tokenOK(given string) bool {
	if c.opts.Token == "" || given == "" {
		return false
	}
	sum := sha256.Sum256([]byte(given))
	return subtle.ConstantTimeCompare(sum[:], c.tokenSum[:]) == 1
}

func (c *Console) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	mux.Handle("GET "+Prefix+"static/", http.StripPrefix(Prefix+"static/", http.FileServerFS(static)))
	mux.HandleFunc("GET "+Prefix+"{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, Prefix+"sinks", http.StatusSeeOther)
	})
	mux.HandleFunc("GET "+Prefix+"sinks", c.sinksPage)
	mux.HandleFunc("GET "+Prefix+"sinks/rows", c.sinksRows)
	mux.HandleFunc("POST "+Prefix+"sinks/pause", c.pauseSink)
	mux.HandleFunc("GET "+Prefix+"dead-letters", c.deadLettersPage)
	mux.HandleFunc("GET "+Prefix+"dead-letters/{seq}", c.deadLetterPage)
	mux.HandleFunc("GET "+Prefix+"events", c.eventsPage)
	mux.HandleFunc("GET "+Prefix+"actions", c.actionsPage)
	mux.HandleFunc("POST "+Prefix+"actions", c.startAction)
	mux.HandleFunc("GET "+Prefix+"jobs", c.jobsPage)
	mux.HandleFunc("GET "+Prefix+"jobs/{id}", c.jobPage)
	mux.HandleFunc("GET "+Prefix+"jobs/{id}/progress", c.jobProgress)
	mux.HandleFunc(Prefix, func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, http.StatusNotFound, "No such page.")
	})

	// Every form posts to this origin only: a page elsewhere (another
	// site, or another port on this host) that makes the operator's
	// browser post here is refused on its Sec-Fetch-Site/Origin headers.
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.log.Warn("cross-origin request refused", zap.String("method", r.Method), zap.String("path", r.URL.Path),
			zap.String("origin", clipHeader(r.Header.Get("Origin"))), zap.String("sec_fetch_site", clipHeader(r.Header.Get("Sec-Fetch-Site"))))
		c.fail(w, r, http.StatusForbidden, "Cross-origin request refused: replay and purge are only accepted from the console's own pages.")
	}))
	return securityHeaders(c.requireToken(cop.Handler(mux)))
}

// requireToken asks for the admin token on every request when
// Options.RequireToken is set. HTTP Basic rather than a login form and a
// session cookie: the browser asks once and sends it with every request
// (htmx's too), and the console keeps no session, no signing key and no
// login form to protect. The user name is ignored; the password is the
// token, compared as tokenOK does. Without TLS it crosses the network in
// clear, as the typed token of a replay does: serve the admin listener
// over a private network or a TLS proxy (docs/console.md).
func (c *Console) requireToken(h http.Handler) http.Handler {
	if !c.opts.RequireToken {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pw, ok := r.BasicAuth(); ok && c.tokenOK(pw) {
			h.ServeHTTP(w, r)
			return
		}
		if _, _, ok := r.BasicAuth(); ok {
			c.log.Warn("console request with a wrong admin token refused", zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr))
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="Chapar console", charset="UTF-8"`)
		c.fail(w, r, http.StatusUnauthorized, "This console is served beyond loopback: sign in with the admin token as the password (any user name).")
	})
}

// securityHeaders keep the console's pages in their own frame, their
// scripts to its own files, and out of caches and referrers.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

func clipHeader(s string) string {
	if len(s) > 128 {
		return s[:128]
	}
	return s
}

// render executes a page (or, for htmx, a fragment) into a buffer first,
// so a template error is a 500, not half a page.
func (c *Console) render(w http.ResponseWriter, _ *http.Request, status int, page, tmpl string, data any) {
	t, ok := c.pages[page]
	if !ok {
		c.log.Error("no such template", zap.String("page", page))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	var buf bufferWriter
	if err := t.ExecuteTemplate(&buf, tmpl, data); err != nil {
		c.log.Error("render", zap.String("page", page), zap.Error(err))
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.b)
}

type bufferWriter struct{ b []byte }

func (b *bufferWriter) Write(p []byte) (int, error) { b.b = append(b.b, p...); return len(p), nil }

// page is what every page template gets besides its own data.
type page struct {
	Title    string
	Nav      string
	Mutating bool // replay and purge are enabled
	Data     any
}

func (c *Console) page(title, nav string, data any) page {
	return page{Title: title, Nav: nav, Mutating: c.MutationsEnabled(), Data: data}
}

// fail renders an error page.
func (c *Console) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	c.render(w, r, status, "error", "layout", c.page(http.StatusText(status), "", msg))
}

// failErr renders and logs an error of the store: its text says what to do
// (no dispatcher has created the stream yet, say) and carries no secret.
func (c *Console) failErr(w http.ResponseWriter, r *http.Request, what string, err error) {
	c.log.Error(what, zap.Error(err))
	if errors.Is(err, context.DeadlineExceeded) {
		c.fail(w, r, http.StatusServiceUnavailable, fmt.Sprintf("%s took longer than %s and was stopped: narrow the filter "+
			"(a sink filter is applied by JetStream), or use the dispatcher dlq commands, which have no time limit.", what, readTimeout))
		return
	}
	c.fail(w, r, http.StatusInternalServerError, fmt.Sprintf("%s failed: %v", what, err))
}
