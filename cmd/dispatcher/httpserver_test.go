package main

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// A client that sends its request a byte at a time, or a huge one, is cut
// off within the limits instead of holding its connection.
func TestServerBoundsSlowAndLargeClients(t *testing.T) {
	l := serverLimits{
		ReadHeaderTimeout: 200 * time.Millisecond, ReadTimeout: 500 * time.Millisecond, WriteTimeout: time.Second,
		IdleTimeout: 300 * time.Millisecond, MaxHeaderBytes: 1 << 10, MaxBodyBytes: 64, MaxConns: 2,
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err != nil {
			var tooBig *http.MaxBytesError
			if errors.As(err, &tooBig) {
				http.Error(w, "too large", http.StatusRequestEntityTooLarge)
				return
			}
			http.Error(w, "read: "+err.Error(), http.StatusBadRequest)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := newServer(h, l)
	go func() { _ = srv.Serve(limitListener(ln, l.MaxConns)) }()
	defer srv.Close()
	addr := ln.Addr().String()

	// dribble sends head at once, then body one byte per 50ms, and says how
	// long the server took to end the connection.
	dribble := func(head, body string) (time.Duration, string) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		ended := make(chan string, 1)
		go func() {
			b, _ := io.ReadAll(c) // until the server closes
			ended <- string(b)
		}()
		_, _ = c.Write([]byte(head))
		for i := 0; i < len(body); i++ {
			select {
			case resp := <-ended:
				return time.Since(start), resp
			case <-time.After(50 * time.Millisecond):
			}
			if _, err := c.Write([]byte{body[i]}); err != nil {
				break
			}
		}
		select {
		case resp := <-ended:
			return time.Since(start), resp
		case <-time.After(5 * time.Second):
			t.Fatalf("the server still holds the connection after 5s")
			return 0, ""
		}
	}
	slowHeaders := "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nX-Slow: " + strings.Repeat("a", 200) + "\r\n\r\nab"
	if took, _ := dribble("", slowHeaders); took > 2*time.Second {
		t.Errorf("slow headers held the connection %s", took)
	}
	took, resp := dribble("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n", strings.Repeat("b", 60))
	if took > 2*time.Second {
		t.Errorf("a slow body held the connection %s", took)
	}
	if strings.Contains(resp, "204") {
		t.Errorf("a body sent over 3s was accepted: %s", resp)
	}

	// Too large: the body, and the headers.
	do := func(req *http.Request) int {
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.StatusCode
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+addr+"/", strings.NewReader(strings.Repeat("x", 65)))
	if code := do(req); code != http.StatusRequestEntityTooLarge {
		t.Errorf("a 65-byte body: %d", code)
	}
	req, _ = http.NewRequest(http.MethodGet, "http://"+addr+"/", nil)
	req.Header.Set("X-Big", strings.Repeat("h", 8<<10))
	if code := do(req); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("8 KiB of headers: %d", code)
	}
	req, _ = http.NewRequest(http.MethodPost, "http://"+addr+"/", strings.NewReader("ok"))
	if code := do(req); code != http.StatusNoContent {
		t.Errorf("a normal request: %d", code)
	}

	// An idle kept-alive connection is closed.
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	r := bufio.NewReader(c)
	if resp, err := http.ReadResponse(r, nil); err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("keep-alive request: %v", err)
	}
	_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
	start := time.Now()
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) || time.Since(start) > 2*time.Second {
		t.Errorf("idle connection: %v after %s, want EOF within the idle timeout", err, time.Since(start))
	}
}

// Connections beyond the limit wait to be accepted; they get no file
// descriptor and no goroutine meanwhile.
func TestLimitListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	lim := limitListener(ln, 1)
	defer lim.Close()
	accepted := make(chan net.Conn, 2)
	go func() {
		for {
			c, err := lim.Accept()
			if err != nil {
				return
			}
			accepted <- c
		}
	}()
	for range 2 {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	first := <-accepted
	select {
	case <-accepted:
		t.Fatal("a second connection was accepted while the first is open")
	case <-time.After(100 * time.Millisecond):
	}
	first.Close()
	select {
	case c := <-accepted:
		c.Close()
	case <-time.After(2 * time.Second):
		t.Fatal("the second connection was not accepted after the first closed")
	}
}
