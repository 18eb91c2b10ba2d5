package console

import (
	"fmt"
	"html/template"
	"time"

	"github.com/chapar-dev/chapar/internal/dlq"
)

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05Z")
	},
	"ago": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return time.Since(t).Round(time.Second).String() + " ago"
	},
	// perMin shows a per-second rate per minute, the scale operators
	// read a sink's traffic in.
	"perMin": func(perSecond float64) string {
		m := perSecond * 60
		switch {
		case m == 0:
			return "0/min"
		case m < 10:
			return fmt.Sprintf("%.1f/min", m)
		default:
			return fmt.Sprintf("%.0f/min", m)
		}
	},
	"status": func(n int) string {
		if n == 0 {
			return "—"
		}
		return fmt.Sprint(n)
	},
	"dec": func(n int) int { return n - 1 },
	// run names a run of a delivery by its replay count.
	"run": func(replay int) string {
		if replay == 0 {
			return "first delivery"
		}
		return fmt.Sprintf("replay %d", replay)
	},
	"maxLogged": func() int { return dlq.MaxLoggedAttempts },
}

// parsePages parses each page with the layout; every page defines
// "content" (and fragments of its own).
func parsePages() (map[string]*template.Template, error) {
	pages := map[string]*template.Template{}
	for _, name := range []string{"sinks", "dead-letters", "dead-letter", "actions", "job", "error", "events", "jobs"} {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("console: template %s: %w", name, err)
		}
		pages[name] = t
	}
	return pages, nil
}
