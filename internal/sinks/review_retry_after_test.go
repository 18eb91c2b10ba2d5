package sinks

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/chapar-dev/chapar/internal/emulator"
	"github.com/chapar-dev/chapar/pkg/envelope"
)

// Review h-retry: a Retry-After too large for a time.Duration is a vendor
// asking for a long wait (max_retry_after then clamps it), never "no
// Retry-After" and never a few hundred milliseconds: parseRetryAfter
// multiplied the seconds into a Duration that overflowed.
func TestHugeRetryAfterIsALongWait(t *testing.T) {
	emu := emulator.New(emulator.DemoConfig())
	v := emu.Vendor(emulator.Chabok)
	srv := httptest.NewServer(v)
	defer srv.Close()
	s := newSink(t, emulator.Chabok, emulator.BaseURL(emulator.Chabok, srv.Listener.Addr().String()), nil,
		map[string]any{"app_id": "demoapp", "access_token": "demo-chabok-token"})
	d := event(t, envelope.TypeTrack, envelope.Track{Name: "x", User: user})
	const long = 24 * time.Hour // anything past every max_retry_after
	for _, tc := range []struct {
		header  string
		atLeast time.Duration // 0: exactly 0 (absent, garbage, past)
	}{
		{"86400", long},
		{"9223372036", long},            // the largest that fits
		{"9223372037", long},            // overflows to a negative
		{"10000000000", long},           // 317 years: overflows to a negative
		{"18446744074", long},           // overflows to +290 ms
		{"100000000000000000000", long}, // past int64: Atoi fails
		{"-5", 0},
		{"soon", 0},
		{time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat), 0},
	} {
		t.Run(tc.header, func(t *testing.T) {
			v.SetFault(emulator.Fault{Status: 503, RetryAfter: tc.header, Count: 1})
			var e *Error
			if !errors.As(s.Deliver(context.Background(), d), &e) {
				t.Fatal("want *Error")
			}
			if tc.atLeast == 0 && e.RetryAfter != 0 || tc.atLeast > 0 && e.RetryAfter < tc.atLeast {
				t.Errorf("Retry-After %q read as %s, want at least %s", tc.header, e.RetryAfter, tc.atLeast)
			}
		})
	}
}
