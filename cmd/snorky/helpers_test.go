package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/snorkyhq/snorky/cdc"
	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
	snorky "github.com/snorkyhq/snorky/cmd/snorky/internal/server"
	"github.com/snorkyhq/snorky/sync/datasync"
	"github.com/snorkyhq/snorky/wsapi"
)

const (
	testKey    = "test-backend-key-0123456789abcdef"
	testSecret = "test-secret-0123456789abcdefghijklm"
)

// baseConfig is a configuration on loopback with free ports.
const baseConfig = `
frontend: {listen: "127.0.0.1:0", path: /ws}
backend: {listen: "127.0.0.1:0", path: /backend, api_key: "` + testKey + `"}
tokens: {secret: "` + testSecret + `"}
limits: {commands_per_second: 0}
log: {level: warn}
`

// server is a running server as the tests see it: the assembly with its
// parts at hand.
type server struct {
	*snorky.Server
	cfg             *config.Config
	metrics         *prometheus.Registry
	reader          *cdc.Reader // nil without a database
	datasync        *datasync.Engine
	ws              *wsapi.Handler
	frontLn, backLn addrOf
}

// addrOf is a listener's address (the tests dial it).
type addrOf struct{ addr net.Addr }

func (a addrOf) Addr() net.Addr { return a.addr }

func testServer(s *snorky.Server) *server {
	return &server{Server: s, cfg: s.Config(), metrics: s.Metrics(), reader: s.Reader(), datasync: s.Engine(),
		ws: s.WebSockets(), frontLn: addrOf{s.FrontendAddr()}, backLn: addrOf{s.BackendAddr()}}
}

func (s *server) frontendURL() string { return s.FrontendURL() }
func (s *server) backendURL() string  { return s.BackendURL() }

// serve runs `snorky serve` in-process (the command's runServe), handing
// ready the server once it listens.
func serve(ctx context.Context, path string, environ []string, logOut io.Writer, ready func(*server)) error {
	return runServe(ctx, path, environ, logOut, func(s *snorky.Server) { ready(testServer(s)) })
}

// startServer runs `serve` with baseConfig plus extra YAML (merged by key
// order: later top-level keys replace earlier ones) and stops it in cleanup.
func startServer(t testing.TB, extra string) *server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "snorky.yaml")
	if err := os.WriteFile(path, []byte(mergeYAML(baseConfig, extra)), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan *server, 1)
	errc := make(chan error, 1)
	go func() {
		errc <- serve(ctx, path, nil, &testLogWriter{t: t}, func(s *server) { readyc <- s })
	}()
	select {
	case s := <-readyc:
		t.Cleanup(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
		return s
	case err := <-errc:
		cancel()
		t.Fatalf("serve: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("server did not start")
	}
	return nil
}

// mergeYAML replaces top-level sections of base that extra redefines.
func mergeYAML(base, extra string) string {
	redefined := map[string]bool{}
	for _, l := range strings.Split(extra, "\n") {
		if k, _, ok := strings.Cut(l, ":"); ok && l != "" && l[0] != ' ' && l[0] != '#' {
			redefined[k] = true
		}
	}
	var out []string
	for _, l := range strings.Split(base, "\n") {
		if k, _, ok := strings.Cut(l, ":"); ok && redefined[k] {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n") + "\n" + extra
}

type testLogWriter struct{ t testing.TB }

func (w *testLogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// wsClient is a test WebSocket client that records what it receives.
type wsClient struct {
	t    testing.TB
	ws   *websocket.Conn
	msgs chan []byte
	done chan struct{}
	// closeErr is the error that ended reading (a *websocket.CloseError
	// for a close frame).
	closeErr error
	// stashed holds notifications that rpc skipped, for next.
	stashed []map[string]any
}

func dial(t testing.TB, s *server, header http.Header) *wsClient {
	t.Helper()
	return dialURL(t, s.frontendURL(), header)
}

// dialURL opens a wsClient on the WebSocket URL u; cleanup closes it.
func dialURL(t testing.TB, u string, header http.Header) *wsClient {
	t.Helper()
	ws, resp, err := websocket.DefaultDialer.Dial(u, header)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("dial: %v (HTTP %d)", err, status)
	}
	c := &wsClient{t: t, ws: ws, msgs: make(chan []byte, 100000), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for {
			_, m, err := ws.ReadMessage()
			if err != nil {
				c.closeErr = err
				return
			}
			c.msgs <- m
		}
	}()
	t.Cleanup(func() { ws.Close() })
	return c
}

func (c *wsClient) sendRaw(s string) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, []byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// call sends a request with the given callId JSON ("" for none).
func (c *wsClient) call(service, command string, params any, callID string) {
	c.t.Helper()
	p, _ := json.Marshal(params)
	msg := `{"command":` + quote(command) + `,"params":` + string(p)
	if callID != "" {
		msg += `,"callId":` + callID
	}
	c.sendRaw(`{"service":` + quote(service) + `,"message":` + msg + `}}`)
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

// next returns the next message, failing after 10 s.
func (c *wsClient) next() map[string]any {
	c.t.Helper()
	if len(c.stashed) > 0 {
		m := c.stashed[0]
		c.stashed = c.stashed[1:]
		return m
	}
	return c.receive()
}

func (c *wsClient) receive() map[string]any {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		var v map[string]any
		d := json.NewDecoder(bytes.NewReader(m))
		d.UseNumber()
		if err := d.Decode(&v); err != nil {
			c.t.Fatalf("server sent invalid JSON %q: %v", m, err)
		}
		return v
	case <-c.done:
		c.t.Fatalf("connection ended: %v", c.closeErr)
	case <-time.After(10 * time.Second):
		c.t.Fatal("no message within 10s")
	}
	return nil
}

// nextRaw returns the next message as text.
func (c *wsClient) nextRaw() string {
	c.t.Helper()
	select {
	case m := <-c.msgs:
		return string(m)
	case <-c.done:
		c.t.Fatalf("connection ended: %v", c.closeErr)
	case <-time.After(10 * time.Second):
		c.t.Fatal("no message within 10s")
	}
	return ""
}

// rpc sends a request with callId 1 and returns the reply's message.
func (c *wsClient) rpc(service, command string, params any) map[string]any {
	c.t.Helper()
	c.call(service, command, params, "1")
	for {
		m := c.receive()
		msg, _ := m["message"].(map[string]any)
		if t := msg["type"]; t == "response" || t == "error" {
			return msg
		}
		c.stashed = append(c.stashed, m)
	}
}

// ok fails unless the call succeeds, and returns its data.
func (c *wsClient) ok(service, command string, params any) any {
	c.t.Helper()
	m := c.rpc(service, command, params)
	if m["type"] != "response" {
		c.t.Fatalf("%s.%s(%v): got %v, want a response", service, command, params, m)
	}
	return m["data"]
}

// fails fails unless the call answers the error text want.
func (c *wsClient) fails(service, command string, params any, want string) {
	c.t.Helper()
	m := c.rpc(service, command, params)
	if m["type"] != "error" || m["message"] != want {
		c.t.Fatalf("%s.%s(%v): got %v, want error %q", service, command, params, m, want)
	}
}

// nothingQueued fails if anything reached c, or was queued for it on the
// server, before a round trip made now: a connection's queue is first in,
// first out, so the reply to a request sent now comes after everything
// queued before (for example by a backend call that has returned). It
// waits for no clock.
func (c *wsClient) nothingQueued() {
	c.t.Helper()
	if len(c.stashed) > 0 {
		c.t.Fatalf("unexpected message %v", c.stashed[0])
	}
	c.sendRaw(`{"service":"pubsub","message":{"command":"no such command","params":{},"callId":"barrier"}}`)
	if m := c.nextRaw(); !strings.Contains(m, `"callId":"barrier"`) {
		c.t.Fatalf("unexpected message %s", m)
	}
}

// waitClose waits for the connection to end and returns the close error.
func (c *wsClient) waitClose() error {
	c.t.Helper()
	deadline := time.After(15 * time.Second)
	for {
		select {
		case <-c.msgs:
		case <-c.done:
			return c.closeErr
		case <-deadline:
			c.t.Fatal("connection not closed within 15s")
		}
	}
}

// backendCall posts body to the backend with the test key and returns the
// status and body.
func backendCall(t testing.TB, s *server, body string) (int, []byte) {
	t.Helper()
	return backendRequest(t, s, http.MethodPost, body, map[string]string{"X-Backend-Key": testKey})
}

func backendRequest(t testing.TB, s *server, method, body string, headers map[string]string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, s.backendURL(), strings.NewReader(body))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("backend request: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// backendOK calls a backend command and returns the response data.
func backendOK(t testing.TB, s *server, service, command string, params any) json.RawMessage {
	t.Helper()
	p, _ := json.Marshal(params)
	status, body := backendCall(t, s, `{"service":`+quote(service)+`,"message":{"command":`+quote(command)+`,"params":`+string(p)+`}}`)
	if status != 200 {
		t.Fatalf("backend %s.%s: HTTP %d %s", service, command, status, body)
	}
	var env struct {
		Message struct {
			Type    string          `json:"type"`
			Data    json.RawMessage `json:"data"`
			Message string          `json:"message"`
		} `json:"message"`
	}
	if err := json.Unmarshal(body, &env); err != nil || env.Message.Type != "response" {
		t.Fatalf("backend %s.%s: got %s, want a response", service, command, body)
	}
	return env.Message.Data
}

// eventually polls cond every 10ms for up to 20s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// http2Idle closes the test client's idle keep-alive connections, whose
// goroutines would otherwise count as leaked.
func http2Idle() { http.DefaultClient.CloseIdleConnections() }
