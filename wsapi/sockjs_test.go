package wsapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// echo answers every request with its params and counts disconnects.
type echo struct{ gone chan uint64 }

func (e echo) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	return json.RawMessage(req.Params), nil
}

func (e echo) Disconnected(c rpc.Conn) {
	select {
	case e.gone <- c.ID():
	default:
	}
}

func newSockJSServer(t *testing.T, cfg Config) (*SockJS, *httptest.Server, chan uint64) {
	t.Helper()
	gone := make(chan uint64, 16)
	reg := rpc.NewRegistry(nil)
	reg.Register("echo", echo{gone: gone})
	reg.Register("burst", burst{})
	h, err := NewHandler(cfg, reg, nil, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	s := NewSockJS(h, "/sockjs")
	mux := http.NewServeMux()
	mux.Handle("/sockjs/", s)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return s, srv, gone
}

// TestSockJSRawWebSocket: the raw /websocket endpoint carries one envelope
// per message, and a shutdown closes the session with 1001.
func TestSockJSRawWebSocket(t *testing.T) {
	s, srv, gone := newSockJSServer(t, Config{})
	url := "ws" + strings.TrimPrefix(srv.URL, "http") + "/sockjs/websocket"
	ws, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	ws.WriteMessage(websocket.TextMessage, []byte(`{"service":"echo","message":{"command":"x","params":{"a":1},"callId":7}}`))
	_, msg, err := ws.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"service":"echo","message":{"type":"response","callId":7,"data":{"a":1}}}`; string(msg) != want {
		t.Fatalf("got %s, want %s", msg, want)
	}
	if s.Len() != 1 {
		t.Errorf("Len: got %d, want 1", s.Len())
	}
	ctx, cancel := contextWithTimeout(5 * time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	_, _, err = ws.ReadMessage()
	var ce *websocket.CloseError
	if !asCloseError(err, &ce) || ce.Code != rpc.CloseGoingAway {
		t.Fatalf("after Shutdown: got %v, want close 1001", err)
	}
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the registry saw no disconnect")
	}
}

// TestSockJSXHR: the xhr polling transport (what a browser without
// WebSocket may use) opens a session, sends and receives envelopes.
func TestSockJSXHR(t *testing.T) {
	_, srv, _ := newSockJSServer(t, Config{})
	base := srv.URL + "/sockjs/000/abcdefgh"
	post := func(path, body string) (int, string) {
		t.Helper()
		resp, err := http.Post(base+path, "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := post("/xhr", ""); code != 200 || body != "o\n" {
		t.Fatalf("open: got %d %q, want 200 \"o\\n\"", code, body)
	}
	env, _ := json.Marshal([]string{`{"service":"echo","message":{"command":"x","params":{"b":[2]},"callId":1}}`})
	if code, body := post("/xhr_send", string(env)); code != 204 {
		t.Fatalf("xhr_send: got %d %q, want 204", code, body)
	}
	code, body := post("/xhr", "")
	if code != 200 || !strings.HasPrefix(body, "a[") {
		t.Fatalf("poll: got %d %q, want an array frame", code, body)
	}
	var frames []string
	if err := json.Unmarshal([]byte(strings.TrimSpace(body[1:])), &frames); err != nil || len(frames) != 1 {
		t.Fatalf("poll: %q: %v", body, err)
	}
	if want := `{"service":"echo","message":{"type":"response","callId":1,"data":{"b":[2]}}}`; frames[0] != want {
		t.Fatalf("got %s, want %s", frames[0], want)
	}
}

// TestSockJSSlowConsumer: a session whose queue passes the bound is closed
// with 4008, like a WebSocket.
func TestSockJSSlowConsumer(t *testing.T) {
	_, srv, _ := newSockJSServer(t, Config{SendQueueBytes: 2 << 10})
	base := srv.URL + "/sockjs/000/slowslow"
	resp, err := http.Post(base+"/xhr", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	env, _ := json.Marshal([]string{`{"service":"burst","message":{"command":"x","params":{"n":100}}}`})
	resp, err = http.Post(base+"/xhr_send", "text/plain", strings.NewReader(string(env)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := http.Post(base+"/xhr", "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if strings.HasPrefix(string(b), "c[") {
			if !strings.Contains(string(b), "4008") || !strings.Contains(string(b), rpc.ReasonSlowConsumer) {
				t.Fatalf("got close frame %q, want 4008 slow consumer", b)
			}
			return
		}
	}
	t.Fatal("no close frame")
}

func contextWithTimeout(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}

func asCloseError(err error, target **websocket.CloseError) bool {
	return errors.As(err, target)
}

// TestSockJSOrigin: the Origin policy of the WebSocket endpoint applies to
// every SockJS request.
func TestSockJSOrigin(t *testing.T) {
	_, srv, _ := newSockJSServer(t, Config{})
	req, _ := http.NewRequest("GET", srv.URL+"/sockjs/info", nil)
	req.Header.Set("Origin", "http://evil.example")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("foreign origin: got %d, want 403", resp.StatusCode)
	}
	req, _ = http.NewRequest("GET", srv.URL+"/sockjs/info", nil)
	req.Header.Set("Origin", srv.URL)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != srv.URL {
		t.Errorf("same origin: got %d, ACAO %q; want 200 and the origin", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
	}
}

// TestSockJSIdentityToken: a bad token in the URL closes the session with
// 4001 and the authenticator's reason, as on a WebSocket.
func TestSockJSIdentityToken(t *testing.T) {
	reg := rpc.NewRegistry(nil)
	reg.Register("echo", echo{gone: make(chan uint64, 4)})
	auth := func(c rpc.Conn, tok string) error {
		if tok != "good" {
			return errors.New("invalid identity token")
		}
		c.SetIdentity(&rpc.Identity{JSON: json.RawMessage(`"alice"`), Key: `"alice"`})
		return nil
	}
	h, err := NewHandler(Config{}, reg, auth, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/sockjs/", NewSockJS(h, "/sockjs"))
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	base := "ws" + strings.TrimPrefix(srv.URL, "http") + "/sockjs/websocket?token="

	ws, _, err := websocket.DefaultDialer.Dial(base+"bad", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _, err = ws.ReadMessage()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != rpc.CloseIdentity || ce.Text != "invalid identity token" {
		t.Fatalf("bad token: got %v, want close 4001 invalid identity token", err)
	}

	ok, _, err := websocket.DefaultDialer.Dial(base+"good", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ok.Close()
	ok.SetReadDeadline(time.Now().Add(10 * time.Second))
	ok.WriteMessage(websocket.TextMessage, []byte(`{"service":"echo","message":{"command":"x","params":{},"callId":1}}`))
	if _, msg, err := ok.ReadMessage(); err != nil || !strings.Contains(string(msg), `"type":"response"`) {
		t.Fatalf("good token: got %s %v, want a response", msg, err)
	}
}

// TestSockJSRateLimit: the command rate limit applies to SockJS sessions:
// excess messages are answered "Rate limit exceeded", and a session that
// keeps it up is closed with 4029.
func TestSockJSRateLimit(t *testing.T) {
	_, srv, _ := newSockJSServer(t, Config{CommandsPerSecond: 1, RateLimitGrace: time.Millisecond})
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(srv.URL, "http")+"/sockjs/websocket", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	// Keep sending, a little apart, until the server closes (the grace
	// period must pass while the rate is exceeded).
	go func() {
		for i := 0; i < 1000; i++ {
			if ws.WriteMessage(websocket.TextMessage, []byte(`{"service":"echo","message":{"command":"x","params":{},"callId":`+fmt.Sprint(i)+`}}`)) != nil {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	limited := 0
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if !errors.As(err, &ce) || ce.Code != rpc.CloseRateLimited {
				t.Fatalf("got %v, want close 4029", err)
			}
			break
		}
		if strings.Contains(string(msg), "Rate limit exceeded") {
			limited++
		}
	}
	if limited == 0 {
		t.Error("no message was answered \"Rate limit exceeded\"")
	}
}
