package metrics

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/chapar-dev/chapar/internal/retry"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// A label value can come from a producer (a binary event's ce-destinations
// header named the sink of a dead letter) or a vendor (an error code): no
// value may panic a method, and hostile values must not multiply series.
func TestHostileLabelValuesNeitherPanicNorMultiplySeries(t *testing.T) {
	hostile := []string{
		"\xff\xfe\xfd",                     // invalid UTF-8: Prometheus panics on it
		"chabok\x00",                       // NUL
		strings.Repeat("a", 1<<20),         // 1 MB
		strings.Repeat("A", 65),            // an identifier one byte too long
		"Chabok", "chabok sink", "-chabok", // not sink names
		"vendor.rejected", "Vendor_Rejected", "a.b", `x"}`, "",
	}
	for i := range 1000 { // many distinct bad values: still one series
		hostile = append(hostile, fmt.Sprintf("\xff%d", i), fmt.Sprintf("Bad Value %d", i))
	}
	m := New()
	for _, v := range hostile {
		m.Unrouted(v, v)
		m.Delivered(v, time.Millisecond)
		m.Retried(v, 1_000_000)
		m.DeadLettered(v, v, -1, v)
		m.BreakerChanged(v, retry.State(2))
		m.InFlight(v, 1)
		m.Unsettled(v, 1)
		m.VendorRequest(v, time.Millisecond, errors.New(v))
		m.Dropped(v)
		m.Panicked(v)
	}
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"other": true, "": true, "0": true}
	for _, f := range families {
		name := f.GetName()
		if !strings.HasPrefix(name, "chapar_") {
			continue
		}
		// Sink, reason, code, stage and type are "other" (or empty, for a
		// code: two series); the outcome is Chapar's own.
		if n := len(f.GetMetric()); n > 2 {
			t.Errorf("%s has %d series from %d hostile values, want at most 2", name, n, len(hostile))
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				v := l.GetValue()
				if !utf8.ValidString(v) || len(v) > 64 {
					t.Errorf("%s{%s} has value %.40q", name, l.GetName(), v)
				}
				if l.GetName() != "outcome" && !allowed[v] {
					t.Errorf("%s{%s=%.40q}: a hostile value became a label", name, l.GetName(), v)
				}
			}
		}
	}
}

func TestWellFormedLabelValuesAreKept(t *testing.T) {
	m := New("metrix-gateway", "s2s_2", strings.Repeat("a", 63), strings.Repeat("a", 64), "Chabok")
	sinkLabel := m.sinkLabel
	tests := []struct {
		name, in, want string
		label          func(string) string
	}{
		{"sink", "metrix-gateway", "metrix-gateway", sinkLabel},
		{"sink with digits and _", "s2s_2", "s2s_2", sinkLabel},
		{"sink of 63 bytes", strings.Repeat("a", 63), strings.Repeat("a", 63), sinkLabel},
		{"sink of 64 bytes", strings.Repeat("a", 64), "other", sinkLabel},
		{"router's no-sink", "-", "-", sinkLabel},
		{"upper-case sink", "Chabok", "other", sinkLabel},
		{"well-formed sink not configured", "probe-ghost-1", "other", sinkLabel},
		{"lower_snake reason", "vendor_rejected", "vendor_rejected", identLabel},
		{"UPPER_SNAKE code", "EVENT_TYPE_DOES_NOT_EXIST", "EVENT_TYPE_DOES_NOT_EXIST", identLabel},
		{"no code", "", "", codeLabel},
		{"no reason", "", "other", identLabel},
		{"code", "NOT_FOUND", "NOT_FOUND", codeLabel},
		{"bad code", "not found", "other", codeLabel},
		{"code of 64 bytes", strings.Repeat("A", 64), strings.Repeat("A", 64), identLabel},
		{"mixed case", "Not_Found", "other", identLabel},
		{"dotted", "google.rpc", "other", identLabel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.label(tt.in); got != tt.want {
				t.Errorf("%q → %q, want %q", tt.in, got, tt.want)
			}
		})
	}
	for _, typ := range envelope.Types() {
		if got := m.typeLabel(typ); got != typ {
			t.Errorf("type %q → %q", typ, got)
		}
	}
	if got := m.typeLabel("chapar.click"); got != "other" {
		t.Errorf("unknown type → %q", got)
	}
	for status, want := range map[int]string{0: "0", 200: "200", 429: "429", 599: "599", 99: "other", 600: "other", -1: "other"} {
		if got := statusLabel(status); got != want {
			t.Errorf("status %d → %q, want %q", status, got, want)
		}
	}
}

// A sink's dead letters carry at most maxCodesPerSink distinct vendor codes
// (a vendor's text can echo what a producer sent); the rest are "other",
// and each sink has its own allowance.
func TestVendorCodesPerSinkAreBounded(t *testing.T) {
	m := New("chabok", "kenar")
	for i := range 10 * maxCodesPerSink {
		m.DeadLettered("chabok", "vendor_rejected", 400, fmt.Sprintf("CODE_%d", i))
	}
	m.DeadLettered("chabok", "vendor_rejected", 400, "CODE_0") // seen: kept
	m.DeadLettered("kenar", "vendor_rejected", 400, "NOT_FOUND")
	families, err := m.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]int{}
	for _, f := range families {
		if f.GetName() != "chapar_dead_letters_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			var sink, code string
			for _, l := range s.GetLabel() {
				switch l.GetName() {
				case "sink":
					sink = l.GetValue()
				case "code":
					code = l.GetValue()
				}
			}
			codes[sink]++
			if code == "CODE_0" && s.GetCounter().GetValue() != 2 {
				t.Errorf("CODE_0 counted %v times, want 2", s.GetCounter().GetValue())
			}
		}
	}
	if codes["chabok"] != maxCodesPerSink+1 || codes["kenar"] != 1 {
		t.Errorf("series per sink %v, want chabok %d (its codes and other), kenar 1", codes, maxCodesPerSink+1)
	}
}
