package faults

// The misbehaving vendor of the pathology matrix: a real TLS server on a
// listener the test controls, so each pathology happens where it would in
// production: a TCP peer that never says a word, a certificate the client
// cannot trust, a port with nothing listening, a connection reset by the
// peer, and the HTTP-level ones (late headers, a trickling body, a
// redirect, a garbage or huge 2xx, a 200 sent after the client gave up).
// It keeps, per (sink, event id), how many requests carried the event, how
// many times it was stored, and how many 2xx answers reached a client that
// was still waiting.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// frontHost is the address the vendors listen on.
const frontHost = "127.0.0.2"

// frontMode is what the vendor does with the next connection or request.
type frontMode int

const (
	modeHealthy     frontMode = iota
	modeNoAnswer              // accept the TCP connection, never read or write a byte
	modeSlowHeaders           // read the request, answer 200 after twice the client's timeout
	modeTrickle               // answer 200 at once, then the body one byte every 50 ms
	modeReset                 // read the request, then reset the connection (RST)
	modeRefused               // nothing listens on the port
	modeBadCert               // a TLS certificate from an authority the client does not trust
	modeRedirect              // 307 to another server
	modeGarbage               // 200 with a body that is not JSON
	modeHuge                  // 200 with a 64 MiB body
	modeLate                  // store the event, answer 200 after the client gave up (first request per event only)
)

// eventBook is what the vendor knows about one (sink, event).
type eventBook struct {
	requests int // requests that carried the event
	stored   int // times the vendor accepted it
	live     int // 2xx answers sent while the client still waited
}

// front is one misbehaving vendor: one port, one mode at a time.
type front struct {
	t         testing.TB
	port      int
	good, bad *tls.Config
	timeout   time.Duration // the sinks' timeout
	elsewhere string        // a redirect's target
	srv       *http.Server
	conns     *chanListener

	mu       sync.Mutex
	mode     frontMode
	ln       net.Listener
	open     map[*trackedConn]struct{}
	book     map[string]*eventBook // sink + "/" + event id
	accepted map[frontMode]int     // TCP connections accepted, by the mode then
	closed   bool
}

func newFront(t testing.TB, ca *testCA, timeout time.Duration, elsewhere string) *front {
	t.Helper()
	f := &front{
		t: t, timeout: timeout, elsewhere: elsewhere,
		good:     &tls.Config{Certificates: []tls.Certificate{ca.leaf}, NextProtos: []string{"http/1.1"}},
		bad:      &tls.Config{Certificates: []tls.Certificate{ca.stranger}, NextProtos: []string{"http/1.1"}},
		open:     map[*trackedConn]struct{}{},
		book:     map[string]*eventBook{},
		accepted: map[frontMode]int{},
	}
	// 127.0.0.2, not .1: the refused pathology frees the port for a
	// while, and a port on an address nobody else binds is less likely to
	// be taken meanwhile by another process asking for one.
	ln, err := net.Listen("tcp", frontHost+":0")
	if err != nil {
		t.Fatal(err)
	}
	f.ln, f.port = ln, ln.Addr().(*net.TCPAddr).Port
	// HTTP/1.1 only (NextProtos): a reset needs a connection to hijack.
	f.conns = newChanListener(ln.Addr())
	f.srv = &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second, ErrorLog: log.New(io.Discard, "", 0)}
	go func() { _ = f.srv.Serve(f.conns) }()
	go f.accept(ln)
	t.Cleanup(f.close)
	return f
}

func (f *front) baseURL(sink string) string {
	return fmt.Sprintf("https://%s:%d/%s/api", frontHost, f.port, sink)
}

func (f *front) close() {
	f.mu.Lock()
	f.closed = true
	ln := f.ln
	conns := f.takeConnsLocked()
	f.mu.Unlock()
	if ln != nil {
		_ = ln.Close()
	}
	for _, c := range conns {
		_ = c.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = f.srv.Shutdown(ctx)
	_ = f.srv.Close()
}

func (f *front) takeConnsLocked() []*trackedConn {
	out := make([]*trackedConn, 0, len(f.open))
	for c := range f.open {
		out = append(out, c)
	}
	clear(f.open)
	return out
}

// accept hands each connection to the mode of the moment.
func (f *front) accept(ln net.Listener) {
	for {
		raw, err := ln.Accept()
		if err != nil {
			return
		}
		c := &trackedConn{Conn: raw, f: f}
		f.mu.Lock()
		if f.closed {
			f.mu.Unlock()
			_ = raw.Close()
			return
		}
		f.open[c] = struct{}{}
		mode := f.mode
		f.accepted[mode]++
		f.mu.Unlock()
		switch mode {
		case modeNoAnswer:
			// Held open, silent, until the mode changes.
		case modeBadCert:
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = tls.Server(c, f.bad).HandshakeContext(ctx)
				_ = c.Close()
			}()
		default:
			f.conns.push(tls.Server(c, f.good))
		}
	}
}

// set changes the mode. Open connections are closed, so a kept-alive
// connection cannot carry the old behaviour into the new mode; refused
// closes the listener and the next mode listens again on the same port.
func (f *front) set(m frontMode) {
	f.t.Helper()
	f.mu.Lock()
	old := f.mode
	f.mode = m
	conns := f.takeConnsLocked()
	ln := f.ln
	if m == modeRefused {
		f.ln = nil
	}
	f.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	switch {
	case m == modeRefused && old != modeRefused:
		_ = ln.Close()
	case old == modeRefused && m != modeRefused:
		// The port was free for a while; listen again on it (another
		// process taking it meanwhile would fail the test, not hide a fault).
		var ln net.Listener
		eventually(f.t, 5*time.Second, fmt.Sprintf("listening again on %d", f.port), func() bool {
			var err error
			ln, err = net.Listen("tcp", fmt.Sprintf("%s:%d", frontHost, f.port))
			return err == nil
		})
		f.mu.Lock()
		f.ln = ln
		f.mu.Unlock()
		go f.accept(ln)
	}
}

func (f *front) currentMode() frontMode {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.mode
}

// events finds the event ids in a track (an object) or trackBulk (an
// array) request: the harness puts each envelope's id in its properties.
func events(body []byte) []string {
	type item struct {
		EventData struct {
			EID string `json:"eid"`
		} `json:"eventData"`
	}
	var one item
	if json.Unmarshal(body, &one) == nil && one.EventData.EID != "" {
		return []string{one.EventData.EID}
	}
	var many []item
	_ = json.Unmarshal(body, &many)
	ids := make([]string, 0, len(many))
	for _, it := range many {
		if it.EventData.EID != "" {
			ids = append(ids, it.EventData.EID)
		}
	}
	return ids
}

// note books one request; stored and live say whether the vendor accepted
// the events and whether its 2xx reached a client still waiting.
func (f *front) note(sink string, ids []string, stored, live bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		b := f.book[sink+"/"+id]
		if b == nil {
			b = &eventBook{}
			f.book[sink+"/"+id] = b
		}
		b.requests++
		if stored {
			b.stored++
		}
		if live {
			b.live++
		}
	}
}

// unseen says whether any of ids is new to the vendor for sink.
func (f *front) unseen(sink string, ids []string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		if f.book[sink+"/"+id] == nil {
			return true
		}
	}
	return false
}

func (f *front) event(sink, id string) eventBook {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b := f.book[sink+"/"+id]; b != nil {
		return *b
	}
	return eventBook{}
}

func (f *front) connections(m frontMode) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.accepted[m]
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	mode := f.currentMode()
	sink, _, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/"), "/")
	body, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	ids := events(body)
	ctx := r.Context()
	switch mode {
	case modeReset:
		f.note(sink, ids, false, false)
		// The request is in; the answer never comes: a TCP reset.
		c, _, err := w.(http.Hijacker).Hijack()
		if err != nil {
			return
		}
		if tc, ok := c.(*tls.Conn); ok {
			if tr, ok := tc.NetConn().(*trackedConn); ok {
				if tcp, ok := tr.Conn.(*net.TCPConn); ok {
					_ = tcp.SetLinger(0)
				}
			}
		}
		_ = c.Close()
		return
	case modeSlowHeaders:
		f.note(sink, ids, false, false)
		wait(ctx, 2*f.timeout)
		w.WriteHeader(http.StatusOK)
		return
	case modeRedirect:
		f.note(sink, ids, false, false)
		w.Header().Set("Location", f.elsewhere+r.URL.Path)
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	case modeLate:
		if f.unseen(sink, ids) {
			// Stored at once; the 200 leaves only once the client is gone.
			f.note(sink, ids, true, false)
			<-ctx.Done()
			w.WriteHeader(http.StatusOK)
			return
		}
	}
	f.note(sink, ids, true, ctx.Err() == nil)
	w.Header().Set("Content-Type", "application/json")
	switch mode {
	case modeTrickle:
		w.Header().Set("Content-Length", "1048576")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for ctx.Err() == nil {
			if _, err := w.Write([]byte(" ")); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
			wait(ctx, 50*time.Millisecond)
		}
	case modeGarbage:
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("<html>\x00\xff{\"queued\": tr\n not json"))
	case modeHuge:
		w.WriteHeader(http.StatusOK)
		chunk := []byte(strings.Repeat(`{"queued":true},`, 2048)) // 32 KiB
		for sent := 0; sent < 64<<20 && ctx.Err() == nil; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	default:
		w.WriteHeader(http.StatusOK)
		fmt.Fprintf(w, `{"queued":true,"n":%d}`, len(ids))
	}
}

// wait sleeps for d or until ctx ends.
func wait(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// trackedConn forgets itself when closed.
type trackedConn struct {
	net.Conn
	f    *front
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.f.mu.Lock()
		delete(c.f.open, c)
		c.f.mu.Unlock()
	})
	return c.Conn.Close()
}

// chanListener feeds the HTTP server the connections accept chose to serve.
type chanListener struct {
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
	addr net.Addr
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{ch: make(chan net.Conn), done: make(chan struct{}), addr: addr}
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		_ = c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// testCA is a certificate authority the dispatcher trusts (its PEM is the
// dispatcher's SSL_CERT_FILE), a leaf it signed for frontHost, and a
// self-signed stranger for the same address that the dispatcher cannot
// trust.
type testCA struct {
	file     string
	leaf     tls.Certificate
	stranger tls.Certificate
}

func newTestCA(t testing.TB, dir string) *testCA {
	t.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	tmpl := func(serial int64, cn string, ca bool) *x509.Certificate {
		c := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}
		if ca {
			c.IsCA, c.BasicConstraintsValid = true, true
		} else {
			c.IPAddresses = []net.IP{net.ParseIP(frontHost)}
		}
		return c
	}
	caKey := key()
	caTmpl := tmpl(1, "chapar-faults CA", true)
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafKey := key()
	leafDER, err := x509.CreateCertificate(rand.Reader, tmpl(2, "vendor", false), caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	strangerKey := key()
	strangerTmpl := tmpl(3, "vendor", false)
	strangerDER, err := x509.CreateCertificate(rand.Reader, strangerTmpl, strangerTmpl, &strangerKey.PublicKey, strangerKey)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return &testCA{
		file:     file,
		leaf:     tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey},
		stranger: tls.Certificate{Certificate: [][]byte{strangerDER}, PrivateKey: strangerKey},
	}
}
