package main

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// openFiles counts this process's open file descriptors.
func openFiles(t testing.TB) int {
	t.Helper()
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(entries)
}

// TestT16HostileInput: reliability.md T16 against the real server.
func TestT16HostileInput(t *testing.T) {
	t.Run("oversize frame closes with 1009", func(t *testing.T) {
		s := startServer(t, `frontend: {listen: "127.0.0.1:0", path: /ws, max_message_bytes: 64KiB}`)
		c := dial(t, s, nil)
		msg := `{"service":"pubsub","message":{"command":"publish","params":{"channel":"c","message":"` + strings.Repeat("x", 70<<10) + `"}}}`
		sent := time.Now()
		c.ws.WriteMessage(websocket.TextMessage, []byte(msg))
		err := c.waitClose()
		took := time.Since(sent)
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseMessageTooBig {
			t.Fatalf("got %v, want close 1009", err)
		}
		// T16 asks for 100 ms: the figure is reported, not asserted (a
		// starved CPU delays it; waitClose bounds a hang).
		t.Logf("oversize frame: close 1009 received %v after sending it", took.Round(time.Microsecond))
	})

	t.Run("malformed input is answered and the connection stays", func(t *testing.T) {
		s := startServer(t, "")
		c := dial(t, s, nil)
		for _, m := range []string{`{"service":`, `[1,2]`, `"x"`, `{"service":"nope","message":{}}`, `{"service":"pubsub","message":{"command":"explode","params":{}}}`, `{"service":"pubsub"}`, "\xff\xfe"} {
			c.sendRaw(m)
			reply := c.receive()
			msg, _ := reply["message"].(map[string]any)
			if msg["type"] != "error" {
				t.Fatalf("%q: got %v, want an error reply", m, reply)
			}
		}
		c.ok("pubsub", "subscribe", map[string]any{"channel": "still-open"})
	})

	t.Run("frame before auth and the auth deadline", func(t *testing.T) {
		s := startServer(t, "frontend: {listen: \"127.0.0.1:0\", path: /ws, require_identity: true}\nlimits: {commands_per_second: 0, auth_timeout: 1s}")
		c := dial(t, s, nil)
		c.fails("pubsub", "subscribe", map[string]any{"channel": "c"}, "Not authenticated")
		start := time.Now()
		var ce *websocket.CloseError
		if err := c.waitClose(); !errors.As(err, &ce) || ce.Code != rpc.CloseIdle || ce.Text != rpc.ReasonAuthTimeout {
			t.Fatalf("got %v, want close 4002 %q", err, rpc.ReasonAuthTimeout)
		}
		t.Logf("unauthenticated socket closed %v after its first message", time.Since(start).Round(time.Millisecond))
	})

	t.Run("5,000 silent sockets closed at the idle deadline", func(t *testing.T) {
		n := 5000
		if testing.Short() {
			n = 500
		}
		const idle = 5 * time.Second
		s := startServer(t, fmt.Sprintf("limits: {commands_per_second: 0, idle_timeout: %s}", idle))
		http2Idle()
		base := openFiles(t)
		type result struct {
			late time.Duration // how long after its idle deadline the socket was closed
			err  error
		}
		results := make(chan result, n)
		var wg sync.WaitGroup
		sem := make(chan struct{}, 32)
		conns := make([]*websocket.Conn, n)
		for i := range n {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 256, WriteBufferSize: 256}
				ws, _, err := d.Dial(s.frontendURL(), nil)
				<-sem
				if err != nil {
					results <- result{err: err}
					return
				}
				opened := time.Now()
				conns[i] = ws
				ws.SetReadDeadline(opened.Add(idle + 30*time.Second))
				_, _, err = ws.ReadMessage()
				var ce *websocket.CloseError
				if !errors.As(err, &ce) || ce.Code != rpc.CloseIdle {
					results <- result{err: fmt.Errorf("got %v, want close 4002", err)}
					return
				}
				results <- result{late: time.Since(opened) - idle}
			}()
		}
		wg.Wait()
		close(results)
		worst, failed := time.Duration(0), 0
		for r := range results {
			if r.err != nil {
				if failed++; failed <= 3 {
					t.Error(r.err)
				}
				continue
			}
			worst = max(worst, r.late)
		}
		if failed > 0 {
			t.Fatalf("%d of %d sockets failed", failed, n)
		}
		// T16's target is 2 s: the figure is reported, not asserted (a
		// starved CPU delays it); the read deadline bounds a hang.
		eventually(t, "the server to release every connection", func() bool { return s.ws.Len() == 0 })
		for _, ws := range conns {
			if ws != nil {
				ws.Close()
			}
		}
		var now int
		eventually(t, "open files back to the baseline", func() bool {
			now = openFiles(t)
			return now <= base+10
		})
		t.Logf("%d silent sockets: each closed with 4002 at most %v after its idle deadline (%v); open files %d before, %d after", n, worst.Round(time.Millisecond), idle, base, now)
	})

	t.Run("foreign origin gets 403", func(t *testing.T) {
		s := startServer(t, "")
		_, resp, err := websocket.DefaultDialer.Dial(s.frontendURL(), http.Header{"Origin": {"https://evil.example"}})
		if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Fatalf("got %v, want HTTP 403", err)
		}
	})
}
