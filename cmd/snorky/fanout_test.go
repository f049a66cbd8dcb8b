package main

import (
	"context"
	"errors"
	"runtime"
	"testing"

	"github.com/gorilla/websocket"
)

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
