package wsapi

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// countStream is a stream of n numbered frames.
type countStream struct{ i, n int }

func (s *countStream) Next(dst []byte) ([]byte, bool) {
	if s.i >= s.n {
		return dst, false
	}
	s.i++
	return fmt.Appendf(dst, `{"service":"stream","message":{"type":"tick","i":%d,"pad":"%s"}}`, s.i, strings.Repeat("s", 2000)), true
}

// streamer queues a stream of n frames on the caller.
type streamer struct{}

func (streamer) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	var p struct{ N int }
	json.Unmarshal(req.Params, &p)
	rpc.SendStream(c, &countStream{n: p.N})
	return nil, nil
}

// TestStreamLargerThanTheQueue: a stream far larger than the send queue
// reaches a client that reads at its own pace, whole and in order, and the
// connection survives although writing it takes many ping intervals.
func TestStreamLargerThanTheQueue(t *testing.T) {
	reg := rpc.NewRegistry(nil)
	reg.Register("stream", streamer{})
	h, err := NewHandler(Config{SendQueueBytes: 4 << 10, PingInterval: 50 * time.Millisecond, WriteTimeout: 2 * time.Second}, reg, nil, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	// A small receive buffer: the kernel must not absorb the stream.
	d := websocket.Dialer{NetDial: func(network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 64<<10) })
			return serr
		}}
		return nd.Dial(network, addr)
	}}
	ws, _, err := d.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	const n = 8000 // about 16 MB: four thousand times the queue
	ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"service":"stream","message":{"command":"go","params":{"n":%d},"callId":1}}`, n)))
	began := time.Now()
	got := 0
	for {
		ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("after %d frames (%v): %v", got, time.Since(began), err)
		}
		if strings.Contains(string(m), `"type":"response"`) {
			break
		}
		got++
		if want := fmt.Sprintf(`"i":%d,`, got); !strings.Contains(string(m), want) {
			t.Fatalf("frame %d: %.80s", got, m)
		}
		if got%50 == 0 {
			time.Sleep(25 * time.Millisecond) // a reader slower than the writer: about 4 MB/s
		}
	}
	if got != n {
		t.Fatalf("got %d frames, want %d", got, n)
	}
	t.Logf("the stream took %v", time.Since(began))
}
