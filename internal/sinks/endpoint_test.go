package sinks

import (
	"bytes"
	"io"
	"net/http"
	"reflect"
	"testing"
)

// An endpoint's request is the one jsonRequest, the sink's Header.Set
// calls and call's User-Agent built per request before: the same method,
// URL, headers, length, body and GetBody, or the same error. Only Host
// differs: empty, which the transport reads as the URL's host.
func checkEndpointAgrees(t *testing.T, rawURL string, body any, header ...string) {
	t.Helper()
	want, werr := jsonRequest(rawURL, body)
	if werr == nil {
		for i := 0; i+1 < len(header); i += 2 {
			want.Header.Set(header[i], header[i+1])
		}
		want.Header.Set("User-Agent", UserAgent)
	}
	e := newEndpoint(rawURL, header...)
	got, gerr := e.post(body)
	if (werr == nil) != (gerr == nil) || werr != nil && werr.Error() != gerr.Error() {
		t.Fatalf("%q: error %v, want %v", rawURL, gerr, werr)
	}
	if werr != nil {
		return
	}
	if got.Method != want.Method || got.Proto != want.Proto || got.ProtoMajor != want.ProtoMajor || got.ProtoMinor != want.ProtoMinor {
		t.Errorf("%q: %s %s, want %s %s", rawURL, got.Method, got.Proto, want.Method, want.Proto)
	}
	if !reflect.DeepEqual(got.URL, want.URL) {
		t.Errorf("%q: URL %#v, want %#v", rawURL, got.URL, want.URL)
	}
	if got.Host != "" || want.Host != want.URL.Host {
		t.Errorf("%q: Host %q (want empty), NewRequest's %q (want the URL's)", rawURL, got.Host, want.Host)
	}
	if !reflect.DeepEqual(got.Header, want.Header) {
		t.Errorf("%q: header %v, want %v", rawURL, got.Header, want.Header)
	}
	if got.ContentLength != want.ContentLength {
		t.Errorf("%q: length %d, want %d", rawURL, got.ContentLength, want.ContentLength)
	}
	read := func(r *http.Request) (body, again []byte) {
		body, _ = io.ReadAll(r.Body)
		rc, err := r.GetBody()
		if err != nil {
			t.Fatal(err)
		}
		again, _ = io.ReadAll(rc)
		return body, again
	}
	gb, gagain := read(got)
	wb, wagain := read(want)
	if !bytes.Equal(gb, wb) || !bytes.Equal(gagain, wagain) || !bytes.Equal(gb, gagain) {
		t.Errorf("%q: body %q and again %q, want %q and %q", rawURL, gb, gagain, wb, wagain)
	}
	// A request's URL is its own: changing it leaves the next one alone.
	got.URL.Path = "/changed"
	if next, _ := e.post(body); next.URL.Path == "/changed" {
		t.Errorf("%q: requests share their URL", rawURL)
	}
}

func TestEndpointBuildsWhatNewRequestBuilds(t *testing.T) {
	item := chabokEvent{UserID: "u-1", EventName: "order_paid", EventTime: 1764, EventData: props()}
	for _, tc := range []struct {
		url    string
		body   any
		header []string
	}{
		{"http://127.0.0.1:8080/installations/track", item, []string{"X-Access-Token", "t"}},
		{"https://sdk.chabok.io/api/installations/trackBulk", chabokEvents{item, item}, []string{"X-Access-Token", "t"}},
		{"https://gateway.metrix.ir/", map[string]any{"a": 1}, []string{"X-Application-Id", "a", "X-API-Key", "k"}},
		{"https://analytics.metrix.ir/inappevent/app%20id", map[string]any{}, []string{"Authorization", "dev"}},
		{"http://host:/empty-port", nil, nil},
		{"http://[::1]:/v6-empty-port", "s", nil},
		{"http://[::1]:80/v6", "s", nil},
		{"http://user:pass@host/with-userinfo?q=1&r=%20#frag", 1, nil},
		{"http://host/a%2Fb/raw-path", 1, []string{"accept", "text/plain", "user-agent", "someone"}},
		{"http://a b/", 1, nil},
		{"://no-scheme", 1, nil},
		{"http://%zz/", 1, nil},
		{"http://host/", func() {}, nil}, // not JSON: the encoding error first
	} {
		checkEndpointAgrees(t, tc.url, tc.body, tc.header...)
	}
}

func FuzzEndpoint(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:8080/installations/track", "http://[::1]:/x", "http://u:p@h:/p?q#f", "://x", "http://%zz/", "HTTP://H/%41"} {
		f.Add(s, "X-Key", "v")
	}
	f.Fuzz(func(t *testing.T, rawURL, key, value string) {
		checkEndpointAgrees(t, rawURL, map[string]string{"k": value}, key, value)
	})
}
