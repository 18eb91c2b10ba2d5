package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// The demo is README's first command: it must account for every event it
// publishes and show each documented vendor error once.
func TestDemoAccountsForEveryEvent(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out, errOut bytes.Buffer
	if err := runCommand(ctx, []string{"demo"}, &out, &errOut); err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	s := out.String()
	for _, want := range []string{
		"16 events published, 16 received, 1 unrouted.",
		"EVENT_TYPE_DOES_NOT_EXIST", "S2S_FEATURE_NOT_AVAILABLE", "INVALID_PARAMETERS", "BAD_REQUEST", "NOT_FOUND",
		"invalid_for_vendor", "invalid_envelope",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("demo output lacks %q:\n%s", want, s)
		}
	}
	// Per-sink lines: delivered, retried (chabok's injected 503s); the
	// webhook's receiver verified each signature.
	for _, line := range []string{"chabok           3          2", "metrix-gateway   4          0", "kenar            1          0",
		"webhook          2          0        -"} {
		if !strings.Contains(s, line) {
			t.Errorf("demo summary lacks %q:\n%s", line, s)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	var out, errOut bytes.Buffer
	ctx := context.Background()
	if err := runCommand(ctx, nil, &out, &errOut); exitCode(err) != 2 {
		t.Errorf("no command: %v", err)
	}
	if err := runCommand(ctx, []string{"frobnicate"}, &out, &errOut); exitCode(err) != 2 || !strings.Contains(err.Error(), "frobnicate") {
		t.Errorf("unknown command: %v", err)
	}
	if err := runCommand(ctx, []string{"run"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "sinks: none configured") {
		t.Errorf("run without sinks: %v", err)
	}
}
