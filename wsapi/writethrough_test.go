package wsapi

import (
	"crypto/tls"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// flood sends, from several goroutines at once, frames of varied sizes,
// each sender in sequence, some as batches, through SendImmediate. It answers once every frame is queued or written.
type flood struct{}

func (flood) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	var p struct{ Senders, N int }
	json.Unmarshal(req.Params, &p)
	var wg sync.WaitGroup
	for s := 0; s < p.Senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			frame := func(i int) []byte {
				pad := strings.Repeat("x", (i*7919)%(30<<10))
				return []byte(fmt.Sprintf(`{"service":"flood","message":{"s":%d,"i":%d,"pad":"%s"}}`, s, i, pad))
			}
			for i := 1; i <= p.N; i++ {
				if i%5 == 0 && i < p.N {
					rpc.SendImmediate(c, frame(i), frame(i+1))
					i++
					continue
				}
				rpc.SendImmediate(c, frame(i))
			}
		}()
	}
	wg.Wait()
	return nil, nil
}

// TestWriteThroughOrder: frames written through (directly by the sending
// goroutine) and frames queued for the writer, partial writes included
// (the client starts reading late, so the socket fills), reach the client
// whole and in each sender's order, with pings from the client answered in
// between.
func TestWriteThroughOrder(t *testing.T) {
	reg := rpc.NewRegistry(nil)
	reg.Register("flood", flood{})
	h, err := NewHandler(Config{SendQueueBytes: 256 << 20}, reg, nil, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var pongs sync.WaitGroup
	ws.SetPongHandler(func(string) error { pongs.Done(); return nil })

	const senders, n = 2, 800
	ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"service":"flood","message":{"command":"go","params":{"Senders":%d,"N":%d},"callId":1}}`, senders, n)))
	time.Sleep(50 * time.Millisecond) // let the socket fill: partial writes

	last := make([]int, senders)
	got, pings := 0, 0
	for got < senders*n {
		if got%200 == 0 && pings < 5 {
			pongs.Add(1)
			if err := ws.WriteControl(websocket.PingMessage, []byte("p"), time.Now().Add(10*time.Second)); err != nil {
				t.Fatal(err)
			}
			pings++
		}
		if got%100 == 0 {
			time.Sleep(time.Millisecond) // a client reading in spurts
		}
		ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("after %d frames: %v", got, err)
		}
		var env struct {
			Message struct {
				Type string
				S, I int
				Pad  string
			}
		}
		if err := json.Unmarshal(m, &env); err != nil {
			t.Fatalf("frame %d is not whole JSON: %v", got, err)
		}
		if env.Message.Type == "response" {
			continue
		}
		s, i := env.Message.S, env.Message.I
		if i != last[s]+1 {
			t.Fatalf("sender %d: got frame %d after %d, want %d", s, i, last[s], last[s]+1)
		}
		if want := (i * 7919) % (30 << 10); len(env.Message.Pad) != want {
			t.Fatalf("sender %d frame %d: got %d bytes of padding, want %d", s, i, len(env.Message.Pad), want)
		}
		last[s] = i
		got++
	}
	// The pongs arrive in order with the frames: read on until all came.
	done := make(chan struct{})
	go func() { pongs.Wait(); close(done) }()
	go func() {
		for {
			ws.SetReadDeadline(time.Now().Add(30 * time.Second))
			if _, _, err := ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("got fewer pongs than the %d pings sent", pings)
	}
}

// TestWriteThroughOnlyPlainSockets: a TLS connection never gets a raw
// write (its bytes must be encrypted); plain TCP does.
func TestWriteThroughOnlyPlainSockets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	// The peer holds its end, reading nothing, until the test ends.
	done := make(chan struct{})
	defer close(done)
	go func() {
		if c, err := ln.Accept(); err == nil {
			defer c.Close()
			<-done
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w := newRawWriter(c)
	if w == nil {
		t.Fatal("plain TCP: got no raw writer, want one")
	}
	if newRawWriter(tls.Client(c, &tls.Config{InsecureSkipVerify: true})) != nil {
		t.Error("TLS: got a raw writer, want none")
	}
	// A write allocates nothing (1,000 two-byte frames fit in the
	// socket's buffer of a peer that reads nothing; AllocsPerRun counts the whole
	// process, so many runs keep other goroutines' allocations below one
	// per run).
	if n := testing.AllocsPerRun(1000, func() {
		if w.try(pingFrame) != len(pingFrame) {
			t.Fatal("the socket did not take a ping frame")
		}
	}); n != 0 {
		t.Errorf("a raw write allocates %.1f times, want 0", n)
	}
}

// writerlessConn returns the server side of a WebSocket connection, with a
// 64 MiB queue, whose writer the caller starts (go c.writeLoop()), and the
// client side. It writes through back to back (no idle gap needed).
func writerlessConn(t *testing.T) (*conn, *websocket.Conn) {
	t.Helper()
	h, err := NewHandler(Config{SendQueueBytes: 64 << 20}, rpc.NewRegistry(nil), nil, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	conns := make(chan *conn, 1)
	up := websocket.Upgrader{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		conns <- newConn(h, ws)
	}))
	t.Cleanup(srv.Close)
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ws.Close() })
	c := <-conns
	c.wtIdle = 0
	return c, ws
}

// TestWriteThroughPartial: with a client that reads nothing yet, write-throughs fill the socket until one is cut short;
// its rest goes to the writer ahead of the frames queued after it, and the
// client gets every frame whole and in order.
func TestWriteThroughPartial(t *testing.T) {
	c, ws := writerlessConn(t)
	defer c.readerGone()

	frame := func(i int) []byte {
		return []byte(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", 1000+(i*7919)%(12<<10))))
	}
	// Without a writer running, nothing but write-throughs reaches the
	// socket: send until one is cut short.
	i := 0
	for c.rest == nil && len(c.queue) == 0 {
		i++
		if i > 100000 {
			t.Fatal("100,000 frames-throughs never filled the socket")
		}
		if i%3 == 0 {
			c.SendImmediate(frame(i), frame(i+1))
			i++
		} else {
			c.SendImmediate(frame(i))
		}
	}
	if c.rest == nil {
		t.Fatalf("got %d frames queued, want none before the socket filled", len(c.queue))
	}
	t.Logf("the socket filled after %d frames; %d bytes left for the writer, %d of them completing a started frame", i, len(c.rest), c.restFrame)
	// The rest of the frames queue behind the cut one.
	n := i + 300
	for i < n {
		i++
		c.Send(frame(i))
	}
	if len(c.queue) == 0 {
		t.Fatal("got no frames queued behind the cut write")
	}
	go c.writeLoop()
	for k := 1; k <= n; k++ {
		ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("frame %d: %v", k, err)
		}
		if want := frame(k); string(m) != string(want) {
			t.Fatalf("frame %d: got %.40q… (%d bytes), want %.40q… (%d bytes)", k, m, len(m), want, len(want))
		}
	}
}
