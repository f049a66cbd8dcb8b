package netfault

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// echoServer echoes every connection until the test ends.
func echoServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func startProxy(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := Start(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dial(t *testing.T, p *Proxy) net.Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// roundTrip writes msg and reads len(msg) bytes back within timeout.
func roundTrip(c net.Conn, msg []byte, timeout time.Duration) ([]byte, error) {
	c.SetDeadline(time.Now().Add(timeout))
	defer c.SetDeadline(time.Time{})
	if _, err := c.Write(msg); err != nil {
		return nil, err
	}
	got := make([]byte, len(msg))
	_, err := io.ReadFull(c, got)
	return got, err
}

func TestPass(t *testing.T) {
	p := startProxy(t, echoServer(t))
	c := dial(t, p)
	msg := bytes.Repeat([]byte("snorky "), 20000) // larger than one chunk
	got, err := roundTrip(c, msg, 30*time.Second)
	if err != nil {
		t.Fatalf("round trip: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Fatalf("got %d bytes back, not what was sent (%d bytes)", len(got), len(msg))
	}
	if acc, open := p.Stats(); acc != 1 || open != 1 {
		t.Fatalf("Stats: got accepted %d, open %d; want 1, 1", acc, open)
	}
}

func TestDelay(t *testing.T) {
	p := startProxy(t, echoServer(t))
	c := dial(t, p)
	const d = 100 * time.Millisecond
	p.SetDelay(d)
	began := time.Now()
	got, err := roundTrip(c, []byte("ping"), 30*time.Second)
	if err != nil || string(got) != "ping" {
		t.Fatalf("round trip: got %q, %v; want ping", got, err)
	}
	// Delayed in each direction: at least twice d (no upper bound: the
	// machine may be slow).
	if el := time.Since(began); el < 2*d {
		t.Fatalf("round trip took %v, want at least %v", el, 2*d)
	}
	p.SetDelay(0)
	if got, err := roundTrip(c, []byte("pong"), 30*time.Second); err != nil || string(got) != "pong" {
		t.Fatalf("after the delay: got %q, %v; want pong", got, err)
	}
}

func TestBlackholeKeepsSocketsOpenAndDropsBytes(t *testing.T) {
	p := startProxy(t, echoServer(t))
	old := dial(t, p)
	if _, err := roundTrip(old, []byte("before"), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Blackhole()
	// The old link: writes succeed, nothing comes back, no error but the
	// deadline.
	_, err := roundTrip(old, []byte("during"), 300*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("old link in the blackhole: got %v, want a deadline error (silence)", err)
	}
	// A new connection is accepted, and silent too.
	during := dial(t, p)
	if _, err := roundTrip(during, []byte("new"), 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("new link in the blackhole: got %v, want a deadline error", err)
	}
	p.Heal()
	// New connections pass again; the blackholed ones stay dead but open.
	after := dial(t, p)
	if got, err := roundTrip(after, []byte("after"), 30*time.Second); err != nil || string(got) != "after" {
		t.Fatalf("new link after heal: got %q, %v; want after", got, err)
	}
	for name, c := range map[string]net.Conn{"old": old, "during": during} {
		if _, err := roundTrip(c, []byte("x"), 200*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("%s link after heal: got %v, want it still silent and open", name, err)
		}
	}
	if acc, open := p.Stats(); acc != 3 || open != 3 {
		t.Fatalf("Stats: got accepted %d, open %d; want 3, 3", acc, open)
	}
}

// A peer that closes behind a blackhole is not seen closing by the other.
func TestBlackholeHidesClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	p := startProxy(t, ln.Addr().String())
	c := dial(t, p)
	var server net.Conn
	select {
	case server = <-accepted:
	case <-time.After(30 * time.Second):
		t.Fatal("the proxy did not connect upstream")
	}
	p.Blackhole()
	server.Close()
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after the upstream closed behind the blackhole: got %v, want a deadline error", err)
	}
}

func TestReset(t *testing.T) {
	p := startProxy(t, echoServer(t))
	c := dial(t, p)
	if _, err := roundTrip(c, []byte("hello"), 30*time.Second); err != nil {
		t.Fatal(err)
	}
	p.Reset()
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err := c.Read(make([]byte, 1))
	if err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after Reset: got %v, want the connection ended", err)
	}
	// The proxy keeps serving new connections.
	c2 := dial(t, p)
	if got, err := roundTrip(c2, []byte("again"), 30*time.Second); err != nil || string(got) != "again" {
		t.Fatalf("after Reset: got %q, %v; want again", got, err)
	}
}

func TestCloseEndsLinks(t *testing.T) {
	p := startProxy(t, echoServer(t))
	c := dial(t, p)
	p.Blackhole()
	if err := p.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read after Close: got %v, want the connection ended", err)
	}
	if _, open := p.Stats(); open != 0 {
		t.Fatalf("open links after Close: got %d, want 0", open)
	}
}
