package console

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/chapar-dev/chapar/internal/dlq"
	"github.com/chapar-dev/chapar/internal/outcome"
)

// filterForm is a dead-letter filter as the pages carry it: in the query
// string of the list and dry-run pages, in hidden fields of the confirm
// forms. The field names are the CLI's flags, and seq: one dead letter by
// its stream sequence (a dead letter's own page links to replay or purge
// it alone, which its id cannot do: an invalid envelope has none).
type filterForm struct {
	Sink, Reason, Status, Code, Type, ID, Since, Until, Seq string
}

var filterFields = []string{"sink", "reason", "status", "code", "type", "id", "since", "until", "seq"}

func readFilterForm(v url.Values) filterForm {
	g := func(k string) string { return strings.TrimSpace(v.Get(k)) }
	return filterForm{Sink: g("sink"), Reason: g("reason"), Status: g("status"), Code: g("code"),
		Type: g("type"), ID: g("id"), Since: g("since"), Until: g("until"), Seq: g("seq")}
}

// Filter is the dlq filter the form says; a bad value is an error naming
// its field.
func (f filterForm) Filter(now time.Time) (dlq.Filter, error) {
	out := dlq.Filter{Sink: f.Sink, Code: f.Code, Reason: outcome.Reason(f.Reason), EventType: f.Type, EventID: f.ID}
	if f.Status != "" {
		n, err := strconv.Atoi(f.Status)
		if err != nil || n < 100 || n > 599 {
			return out, fmt.Errorf("status: %q is not an HTTP status; use a number like 400, or leave it empty", f.Status)
		}
		out.Status = n
	}
	if f.Reason != "" && !knownReason(out.Reason) {
		return out, fmt.Errorf("reason: %q is not a dead-letter reason; use one of %s", f.Reason, reasonList())
	}
	var err error
	if out.Since, err = dlq.ParseWhen(f.Since, now); err != nil {
		return out, fmt.Errorf("since: %w", err)
	}
	if out.Until, err = dlq.ParseWhen(f.Until, now); err != nil {
		return out, fmt.Errorf("until: %w", err)
	}
	if f.Seq != "" {
		n, err := strconv.ParseUint(f.Seq, 10, 64)
		if err != nil || n == 0 {
			return out, fmt.Errorf("seq: %q is not a stream sequence; use a dead letter's Seq, or leave it empty", f.Seq)
		}
		out.After, out.Through = n-1, n
	}
	// A sink that is not a sink name (markup, *, >) is refused here, as
	// the CLI refuses it: never read as a subject wildcard.
	if err := out.Validate(); err != nil {
		return out, err
	}
	return out, nil
}

// Query is the form as a query string (without a cursor).
func (f filterForm) Query() string {
	v := url.Values{}
	for i, val := range f.values() {
		if val != "" {
			v.Set(filterFields[i], val)
		}
	}
	return v.Encode()
}

// Href is a console path with the filter (and a cursor, if not 0) as its
// query: built whole here, so the template escapes it as one URL.
func (f filterForm) Href(path string, after uint64) string {
	q := f.Query()
	if after > 0 {
		if q != "" {
			q += "&"
		}
		q += "after=" + strconv.FormatUint(after, 10)
	}
	if q == "" {
		return path
	}
	return path + "?" + q
}

// Fields are the form's non-empty fields, for hidden inputs.
func (f filterForm) Fields() []field {
	var out []field
	for i, val := range f.values() {
		if val != "" {
			out = append(out, field{filterFields[i], val})
		}
	}
	return out
}

// Empty says the filter selects every dead letter.
func (f filterForm) Empty() bool { return len(f.Fields()) == 0 }

func (f filterForm) values() []string {
	return []string{f.Sink, f.Reason, f.Status, f.Code, f.Type, f.ID, f.Since, f.Until, f.Seq}
}

type field struct{ Name, Value string }

func knownReason(r outcome.Reason) bool {
	for _, k := range outcome.Reasons() {
		if k == r {
			return true
		}
	}
	return false
}

func reasonList() string {
	var names []string
	for _, r := range outcome.Reasons() {
		names = append(names, string(r))
	}
	return strings.Join(names, ", ")
}
