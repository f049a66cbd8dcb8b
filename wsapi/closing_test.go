package wsapi

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// revoker closes the calling connection on "revoke" (as disconnectIdentity
// does) and counts the other commands it handles.
type revoker struct{ handled atomic.Int64 }

func (r *revoker) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	if req.Command == "revoke" {
		c.Close(rpc.CloseIdentity, "identity revoked")
		return nil, nil
	}
	r.handled.Add(1)
	return nil, nil
}

// TestClosedConnectionRunsNothing: a client that ignores the server's close
// frame and keeps sending gets none of its messages handled (a revoked
// identity must not act), and cannot hold the connection open past the
// close deadline by sending, as it could hold an open one by its pings.
func TestClosedConnectionRunsNothing(t *testing.T) {
	rev := &revoker{}
	reg := rpc.NewRegistry(nil)
	reg.Register("rev", rev)
	h, err := NewHandler(Config{PingInterval: time.Second, WriteTimeout: 2 * time.Second}, reg, nil, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	ws := dial(t, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	ws.SetCloseHandler(func(int, string) error { return nil }) // no close reply

	if m := call(t, ws, "rev", "count", `{}`); m["type"] != "response" {
		t.Fatalf("count before the close: %v", m)
	}
	ws.WriteMessage(websocket.TextMessage, []byte(`{"service":"rev","message":{"command":"revoke","params":{},"callId":2}}`))
	if ce := closeCode(t, ws, 10*time.Second); ce.Code != rpc.CloseIdentity {
		t.Fatalf("got close %d, want 4001", ce.Code)
	}

	// Keep sending, every 50 ms, well inside the 4 s read deadline each
	// message used to renew (2 × ping_interval + write_timeout).
	count := []byte(`{"service":"rev","message":{"command":"count","params":{},"callId":3}}`)
	if err := ws.WriteMessage(websocket.TextMessage, count); err != nil {
		t.Fatalf("sending after the close frame: %v", err)
	}
	stop := make(chan struct{})
	sent := make(chan int)
	go func() {
		n := 1
		defer func() { sent <- n }()
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if ws.WriteMessage(websocket.TextMessage, count) != nil {
				return
			}
			n++
		}
	}()
	waitFor(t, "the closed connection to end while its peer keeps sending", func() bool { return h.Len() == 0 })
	close(stop)
	n := <-sent
	if got := rev.handled.Load(); got != 1 {
		t.Fatalf("handled %d commands, want only the one before the close (%d sent after it)", got, n)
	}
}

// TestPeerCloseAnswered: the peer's close frame is answered with its code,
// through the writer.
func TestPeerCloseAnswered(t *testing.T) {
	h, _, u := fanServer(t, Config{}, nil)
	ws := dial(t, u, nil)
	if m := call(t, ws, "fan", "subscribe", `{}`); m["type"] != "response" {
		t.Fatalf("subscribe: %v", m)
	}
	ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(4000, "bye"), time.Now().Add(5*time.Second))
	if ce := closeCode(t, ws, 10*time.Second); ce.Code != 4000 {
		t.Fatalf("got close %d, want the peer's 4000 echoed", ce.Code)
	}
	waitFor(t, "the connection to end", func() bool { return h.Len() == 0 })
}

// TestPeerCloseAfterCutFrame: when the peer's close arrives while a
// write-through has left a frame half-written, the answer completes that
// frame first: the peer reads whole frames, then the close frame (gorilla
// would have written it into the middle of the frame).
func TestPeerCloseAfterCutFrame(t *testing.T) {
	c, ws := writerlessConn(t)
	frame := func(i int) []byte {
		return []byte(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", 1000+(i*7919)%(12<<10))))
	}
	i := 0
	for c.rest == nil {
		i++
		if i > 100000 {
			t.Fatal("100,000 write-throughs never filled the socket")
		}
		c.SendImmediate(frame(i))
	}
	if c.restFrame == 0 {
		t.Skip("the socket filled on a frame boundary; nothing to complete")
	}
	// The peer's close, as the reader sees it, then the reader ends.
	c.peerClosed(websocket.CloseNormalClosure)
	c.readerGone()
	go c.writeLoop()
	for k := 1; ; k++ {
		ws.SetReadDeadline(time.Now().Add(30 * time.Second))
		_, m, err := ws.ReadMessage()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			if ce.Code != websocket.CloseNormalClosure || k != i+1 {
				t.Fatalf("got close %d after %d frames, want 1000 after all %d", ce.Code, k-1, i)
			}
			break
		}
		if err != nil {
			t.Fatalf("frame %d: %v (a frame cut by the close frame?)", k, err)
		}
		if want := frame(k); string(m) != string(want) {
			t.Fatalf("frame %d: got %.40q… (%d bytes), want %.40q…", k, m, len(m), want)
		}
	}
}
