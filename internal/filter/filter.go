// Package filter is a route's content filter (routes[i].filter): an
// expression over an event's envelope attributes and data that must be
// true for the route to send the event to its sinks.
//
// Expressions are github.com/expr-lang/expr (Go-like syntax: ==, >=,
// &&, ||, not, in, startsWith, matches, ?. and ?? for a field that may be
// absent). They are compiled once, when the config is checked and when a
// dispatcher starts, against a fixed environment (Env), so a misspelt
// attribute or a type error is a config error with its position, not a
// surprise on the first event.
//
// Evaluation is a pure function of the event: the same event gives the
// same answer in every sink's worker and every replica, which routing and
// config fencing rely on. So now(), the one builtin that reads the clock,
// is not offered.
package filter

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/expr-lang/expr"
	"github.com/expr-lang/expr/ast"
	"github.com/expr-lang/expr/file"
	"github.com/expr-lang/expr/vm"

	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Env is what an expression sees: the envelope's attributes by their
// CloudEvents names, the event's name (as routes[i].names matches it) and
// data, the event's data decoded from JSON (objects are maps, numbers are
// int when integral and within int64, else float; absent data is nil).
type Env struct {
	ID              string            `expr:"id"`
	Source          string            `expr:"source"`
	Type            string            `expr:"type"`
	Subject         string            `expr:"subject"`
	Time            time.Time         `expr:"time"` // zero when the envelope has none
	DataContentType string            `expr:"datacontenttype"`
	DataSchema      string            `expr:"dataschema"`
	Name            string            `expr:"name"`
	Extensions      map[string]string `expr:"extensions"`
	Data            any               `expr:"data"`
}

// Names lists what an expression can read, as it writes them: the
// config's error for a misspelt one shows them.
func Names() []string {
	return []string{"id", "source", "type", "subject", "time", "datacontenttype", "dataschema", "name", "extensions", "data"}
}

// Filter is one compiled expression. It is read-only, safe for
// concurrent use.
type Filter struct {
	src      string
	prog     *vm.Program
	usesData bool
	// vms are machines to run prog on, reused: a new one for each event
	// would cost more than a simple filter's evaluation.
	vms sync.Pool
}

// Compile compiles src, which must give a bool. A syntax or type error is
// a *CompileError saying where in src it is.
func Compile(src string) (*Filter, error) {
	prog, err := expr.Compile(src, expr.Env(Env{}), expr.AsBool(), expr.DisableBuiltin("now"))
	if err != nil {
		ce := &CompileError{Msg: err.Error()}
		var fe *file.Error
		if errors.As(err, &fe) {
			ce.Msg, ce.Line, ce.Column = fe.Message, fe.Line, fe.Column+1
		}
		if strings.Contains(ce.Msg, `Operator("=")`) {
			ce.Msg += ", use == to compare" // the likeliest slip of all
		}
		return nil, ce
	}
	uses := ast.Find(prog.Node(), func(n ast.Node) bool {
		id, ok := n.(*ast.IdentifierNode)
		return ok && id.Value == "data"
	}) != nil
	f := &Filter{src: src, prog: prog, usesData: uses}
	f.vms.New = func() any { return new(vm.VM) }
	return f, nil
}

// CompileError is an expression that does not compile, and where.
type CompileError struct {
	Msg          string
	Line, Column int // 1-based; 0 when the library gave no position
}

func (e *CompileError) Error() string {
	if e.Column == 0 {
		return e.Msg
	}
	if e.Line > 1 {
		return fmt.Sprintf("%s (line %d, column %d)", e.Msg, e.Line, e.Column)
	}
	return fmt.Sprintf("%s (at column %d)", e.Msg, e.Column)
}

// String is the expression as written.
func (f *Filter) String() string { return f.src }

// UsesData says whether the expression reads data: one that does not
// is evaluated without decoding it.
func (f *Filter) UsesData() bool { return f.usesData }

// Input is one event as filters see it, its data decoded at most once,
// and only if a filter that reads data is evaluated. Not safe for
// concurrent use: one per event and goroutine.
type Input struct {
	ev      *envelope.Event
	env     Env
	built   bool
	decoded bool
	dataErr error
}

// NewInput wraps ev; nothing is decoded yet.
func NewInput(ev *envelope.Event) *Input { return &Input{ev: ev} }

// Match evaluates f on in. An error (the data is not JSON, a field the
// expression reads is absent or of another type) is returned with false:
// the caller decides what a failed filter means (routes: no match).
func (f *Filter) Match(in *Input) (bool, error) {
	if !in.built {
		e := in.ev
		in.env = Env{ID: e.ID, Source: e.Source, Type: e.Type, Subject: e.Subject,
			DataContentType: e.DataContentType, DataSchema: e.DataSchema, Name: e.Name(), Extensions: e.Extensions}
		if e.Time != nil {
			in.env.Time = *e.Time
		}
		in.built = true
	}
	if f.usesData && !in.decoded {
		in.env.Data, in.dataErr = decode(in.ev.Data)
		in.decoded = true
	}
	if f.usesData && in.dataErr != nil {
		return false, in.dataErr
	}
	m := f.vms.Get().(*vm.VM)
	out, err := m.Run(f.prog, &in.env)
	f.vms.Put(m)
	if err != nil {
		return false, flatten(err)
	}
	ok, _ := out.(bool) // AsBool: a bool, or nil for an absent field read as is
	return ok, nil
}

// flatten keeps a runtime error on one line (expr adds the source and a
// caret below it): it is logged and counted, not shown under the config.
func flatten(err error) error {
	var fe *file.Error
	if errors.As(err, &fe) {
		return fmt.Errorf("%s (at column %d)", fe.Message, fe.Column+1)
	}
	return err
}

// decode reads data as JSON, keeping integers exact (an id beyond 2^53
// compares equal to itself written in the filter).
func decode(raw json.RawMessage) (any, error) {
	if len(raw) == 0 {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("data is not JSON: %w", err)
	}
	return numbers(v), nil
}

// numbers turns json.Number into int or float64, which expr compares
// with the literals of an expression (a json.Number is a string to it).
func numbers(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = numbers(e)
		}
	case []any:
		for i, e := range x {
			x[i] = numbers(e)
		}
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return int(i)
		}
		f, _ := x.Float64() // valid JSON number: ±Inf at worst
		return f
	}
	return v
}
