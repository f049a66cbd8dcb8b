package wsapi

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// burst queues n frames on the caller with SendLatest under one key, or
// with Send when the params say so.
type burst struct{}

func (burst) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	var p struct {
		N      int  `json:"n"`
		Latest bool `json:"latest"`
	}
	json.Unmarshal(req.Params, &p)
	for i := 1; i <= p.N; i++ {
		f := []byte(fmt.Sprintf(`{"service":"burst","message":{"type":"tick","i":%d,"pad":"%s"}}`, i, strings.Repeat("x", 100)))
		if p.Latest {
			c.SendLatest("cursor-1", f)
		} else {
			c.Send(f)
		}
	}
	return nil, nil
}

func newTestServer(t *testing.T, cfg Config) (*Handler, string) {
	t.Helper()
	reg := rpc.NewRegistry(nil)
	reg.Register("burst", burst{})
	h, err := NewHandler(cfg, reg, nil, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	t.Cleanup(func() {
		srv.Close()
	})
	return h, "ws" + strings.TrimPrefix(srv.URL, "http")
}

// TestSendLatestCoalesces: 1,000 updates of one key through a 4 KiB queue
// never overflow it (the newest replaces the queued one), and the client
// ends with the newest.
func TestSendLatestCoalesces(t *testing.T) {
	_, url := newTestServer(t, Config{SendQueueBytes: 4 << 10})
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.WriteMessage(websocket.TextMessage, []byte(`{"service":"burst","message":{"command":"go","params":{"n":1000,"latest":true},"callId":1}}`))
	last := 0
	for {
		ws.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, m, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("after tick %d: %v (a 4008 close means the queue overflowed)", last, err)
		}
		var env struct {
			Message struct {
				Type string `json:"type"`
				I    int    `json:"i"`
			} `json:"message"`
		}
		json.Unmarshal(m, &env)
		if env.Message.Type == "response" {
			break
		}
		if env.Message.I <= last {
			t.Fatalf("tick %d after %d: out of order", env.Message.I, last)
		}
		last = env.Message.I
	}
	if last != 1000 {
		t.Fatalf("last tick: got %d, want 1000", last)
	}
}

// TestQueueOverflowCloses4008: the same burst with Send overflows the
// queue of a client that reads nothing until afterwards.
func TestQueueOverflowCloses4008(t *testing.T) {
	h, url := newTestServer(t, Config{SendQueueBytes: 4 << 10})
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	// 100,000 frames of ~150 bytes: far more than socket buffers and the
	// queue hold while the client is not reading.
	ws.WriteMessage(websocket.TextMessage, []byte(`{"service":"burst","message":{"command":"go","params":{"n":100000},"callId":1}}`))
	deadline := time.Now().Add(20 * time.Second)
	for {
		ws.SetReadDeadline(deadline)
		if _, _, err := ws.ReadMessage(); err != nil {
			if ce, ok := err.(*websocket.CloseError); ok && ce.Code != rpc.CloseSlowConsumer {
				t.Fatalf("got close %d, want 4008", ce.Code)
			}
			break
		}
	}
	for h.Len() > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if h.Len() != 0 {
		t.Fatal("connection not closed")
	}
	if n := testutil.ToFloat64(h.SlowConsumerCloses()); n != 1 {
		t.Fatalf("slow-consumer closes: got %v, want 1", n)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want string
	}{
		{Config{AllowedOrigins: []string{"example.com"}}, "AllowedOrigins[0]"},
		{Config{AllowedOrigins: []string{"https://example.com/path"}}, "AllowedOrigins[0]"},
		{Config{CommandsPerSecond: -1}, "CommandsPerSecond"},
		{Config{AllowedOrigins: []string{"*", "https://a.example:8443"}}, ""},
	} {
		err := tc.cfg.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("Validate(%+v): got %v, want an error naming %q", tc.cfg, err, tc.want)
		}
	}
}
