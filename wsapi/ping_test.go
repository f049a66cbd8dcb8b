package wsapi

import (
	"encoding/json"
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

// trickler sends n numbered messages, one every 100 µs, from its own
// goroutine: Sends race with the ping loop's direct pings.
type trickler struct{}

func (trickler) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	var p struct{ N int }
	json.Unmarshal(req.Params, &p)
	go func() {
		for i := 1; i <= p.N; i++ {
			c.Send(fmt.Appendf(nil, `{"service":"t","message":{"type":"tick","i":%d}}`, i))
			time.Sleep(100 * time.Microsecond)
		}
	}()
	return nil, nil
}

// TestPingsIdleAndBusy: the ping loop pings an idle connection itself and
// a busy one through its writer; either way every ping reaches the client
// as a whole frame between whole messages, and the messages arrive in
// order.
func TestPingsIdleAndBusy(t *testing.T) {
	reg := rpc.NewRegistry(nil)
	reg.Register("t", trickler{})
	h, err := NewHandler(Config{PingInterval: 2 * time.Millisecond, WriteTimeout: 2 * time.Second}, reg, nil, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	var pings atomic.Int64
	ws.SetPingHandler(func(string) error {
		pings.Add(1)
		return ws.WriteControl(websocket.PongMessage, nil, time.Now().Add(time.Second))
	})

	// Idle: only pings arrive (read with a deadline; the handler counts).
	ws.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, m, err := ws.ReadMessage(); err == nil {
		t.Fatalf("an idle connection got a message: %s", m)
	}
	idle := pings.Load()
	if idle < 10 {
		t.Fatalf("%d pings in 300 ms at a 2 ms interval, want at least 10", idle)
	}
	// The deadline broke the client's connection state (gorilla), so open
	// a fresh one for the busy half.
	ws.Close()
	ws, _, err = websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	pings.Store(0)
	ws.SetPingHandler(func(string) error {
		pings.Add(1)
		return ws.WriteControl(websocket.PongMessage, nil, time.Now().Add(time.Second))
	})
	const n = 3000
	ws.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf(`{"service":"t","message":{"command":"go","params":{"n":%d},"callId":1}}`, n)))
	got := 0
	for got < n {
		ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("after %d messages: %v", got, err)
		}
		if strings.Contains(string(m), `"type":"response"`) {
			continue
		}
		got++
		if want := fmt.Sprintf(`"i":%d}`, got); !strings.Contains(string(m), want) {
			t.Fatalf("message %d: %s", got, m)
		}
	}
	if p := pings.Load(); p < 10 {
		t.Errorf("%d pings while %d messages were sent, want at least 10", p, n)
	}
	t.Logf("idle: %d pings in 300 ms; busy: %d pings among %d messages", idle, pings.Load(), n)
}
