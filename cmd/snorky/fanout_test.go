package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSlowConsumerIsClosed: a client that never reads is closed once its
// queue passes the bound, while 50 other subscribers of the same channel
// receive every message.
func TestSlowConsumerIsClosed(t *testing.T) {
	s := startServer(t, `frontend: {listen: "127.0.0.1:0", path: /ws, send_queue_bytes: 1MiB}
limits: {commands_per_second: 0, pending_bytes: 128KiB}
backend: {listen: "127.0.0.1:0", path: /backend, api_key: "`+testKey+`", max_body_bytes: 1MiB}`)

	// The slow client: a tiny receive buffer, and it never reads.
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			return serr
		}}
		return nd.DialContext(ctx, network, addr)
	}}
	slow, _, err := d.Dial(s.frontendURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.WriteMessage(websocket.TextMessage, []byte(`{"service":"pubsub","message":{"command":"subscribe","params":{"channel":"c"}}}`))

	const readers, messages = 50, 100
	var wg sync.WaitGroup
	counts := make([]int, readers)
	for i := range readers {
		ws, _, err := websocket.DefaultDialer.Dial(s.frontendURL(), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer ws.Close()
		ws.WriteMessage(websocket.TextMessage, []byte(`{"service":"pubsub","message":{"command":"subscribe","params":{"channel":"c"}}}`))
		if _, _, err := ws.ReadMessage(); err != nil { // the response
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for counts[i] < messages {
				ws.SetReadDeadline(time.Now().Add(30 * time.Second))
				_, m, err := ws.ReadMessage()
				if err != nil {
					return
				}
				if strings.Contains(string(m), `"type":"message"`) {
					counts[i]++
				}
			}
		}()
	}
	eventually(t, "51 subscribers", func() bool { return s.ws.Len() == readers+1 })
	// 100 messages of 64 KiB: 6.4 MB, more than the slow client's socket
	// buffers and its 1 MiB queue hold; the readers have 16 messages of
	// headroom, so a loaded machine pausing them all does not close them.
	body := strings.Repeat("x", 64<<10)
	for i := range messages {
		status, resp := backendCall(t, s, fmt.Sprintf(`{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"c","message":[%d,"%s"]}}}`, i, body))
		if status != 200 {
			t.Fatalf("publish %d: HTTP %d %s", i, status, resp)
		}
	}
	wg.Wait()
	for i, n := range counts {
		if n != messages {
			t.Errorf("reader %d: got %d messages, want %d", i, n, messages)
		}
	}
	eventually(t, "slow consumer closed", func() bool { return s.ws.Len() == readers })
	if got := testutil.ToFloat64(s.ws.SlowConsumerCloses()); got != 1 {
		t.Fatalf("slow consumer closes: got %v, want 1", got)
	}
}

// TestShutdownClosesWith1001: every client gets close 1001 and no goroutine
// is left behind.
func TestShutdownClosesWith1001(t *testing.T) {
	before := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	path := t.TempDir() + "/snorky.yaml"
	writeFile(t, path, baseConfig)
	readyc := make(chan *server, 1)
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, path, nil, &testLogWriter{t: t}, func(s *server) { readyc <- s }) }()
	s := <-readyc
	var clients []*wsClient
	for range 20 {
		c := dial(t, s, nil)
		c.ok("pubsub", "subscribe", map[string]any{"channel": "c"})
		clients = append(clients, c)
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("serve: %v", err)
	}
	for i, c := range clients {
		err := c.waitClose()
		var ce *websocket.CloseError
		if !errors.As(err, &ce) || ce.Code != websocket.CloseGoingAway || ce.Text != "server shutting down" {
			t.Fatalf("client %d: got %v, want close 1001", i, err)
		}
		c.ws.Close()
	}
	http2Idle() // let the client side's idle HTTP connections go
	eventually(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= before })
}
