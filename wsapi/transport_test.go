package wsapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// fanout is a broadcast service: "subscribe" adds the caller, "publish"
// queues {"type":"message","message":…} on every subscriber, as a
// channel service does.
type fanout struct {
	mu   sync.Mutex
	subs map[uint64]rpc.Conn
}

func (f *fanout) Handle(c rpc.Conn, req *rpc.Request) (any, error) {
	switch req.Command {
	case "subscribe":
		f.mu.Lock()
		f.subs[c.ID()] = c
		f.mu.Unlock()
	case "publish":
		f.publish(req.Params)
	default:
		return nil, rpc.ErrUnknownCommand
	}
	return nil, nil
}

// publish sends one notification to every subscriber; Send never blocks.
func (f *fanout) publish(params []byte) {
	frame := []byte(`{"service":"fan","message":{"type":"message","params":` + string(params) + `}}`)
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.subs {
		c.Send(frame)
	}
}

func (f *fanout) Disconnected(c rpc.Conn) {
	f.mu.Lock()
	delete(f.subs, c.ID())
	f.mu.Unlock()
}

func (f *fanout) Holds(c rpc.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.subs[c.ID()] != nil
}

// fanServer serves a handler with the service "fan" and the given
// authenticator, and returns the handler, the service and the ws:// URL.
func fanServer(t *testing.T, cfg Config, auth Authenticator) (*Handler, *fanout, string) {
	t.Helper()
	return fanServerOn(t, cfg, auth, nil)
}

// fanServerOn is fanServer on a listener wrapped by wrap (when not nil).
func fanServerOn(t *testing.T, cfg Config, auth Authenticator, wrap func(net.Listener) net.Listener) (*Handler, *fanout, string) {
	t.Helper()
	f := &fanout{subs: map[uint64]rpc.Conn{}}
	reg := rpc.NewRegistry(nil)
	if err := reg.Register("fan", f); err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(cfg, reg, auth, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	if wrap != nil {
		srv.Listener = wrap(srv.Listener)
	}
	srv.Start()
	t.Cleanup(func() {
		h.Shutdown(context.Background())
		srv.Close()
	})
	return h, f, "ws" + strings.TrimPrefix(srv.URL, "http")
}

// waitFor polls cond every 5 ms and fails after 30 s.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOversizeMessageCloses1009: a message over max_message_bytes closes
// the connection with 1009; one under it is answered.
func TestOversizeMessageCloses1009(t *testing.T) {
	_, _, u := fanServer(t, Config{MaxMessageBytes: 1 << 10}, nil)
	ws := dial(t, u, nil)
	if m := call(t, ws, "fan", "publish", `{"pad":"`+strings.Repeat("x", 900)+`"}`); m["type"] != "response" {
		t.Fatalf("900-byte message: got %v, want a response", m)
	}
	ws.WriteMessage(websocket.TextMessage, []byte(`{"service":"fan","message":{"command":"publish","params":{"pad":"`+strings.Repeat("x", 2000)+`"},"callId":1}}`))
	if ce := closeCode(t, ws, 20*time.Second); ce.Code != websocket.CloseMessageTooBig || ce.Text != "message too big" {
		t.Fatalf("got %v, want close 1009 \"message too big\"", ce)
	}
}

// TestOriginPolicy: by default the same host and no Origin are accepted and
// a foreign Origin gets 403; a list admits exactly its entries; "*" admits
// every origin.
func TestOriginPolicy(t *testing.T) {
	_, _, u := fanServer(t, Config{}, nil)
	host := strings.TrimPrefix(u, "ws://")
	dial(t, u, http.Header{"Origin": {"http://" + host}}) // same host: accepted
	dial(t, u, nil)                                       // no Origin: accepted
	if _, resp, err := websocket.DefaultDialer.Dial(u, http.Header{"Origin": {"http://evil.example"}}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: got %v, want HTTP 403", err)
	}

	_, _, u2 := fanServer(t, Config{AllowedOrigins: []string{"https://app.example.com"}}, nil)
	dial(t, u2, http.Header{"Origin": {"https://app.example.com"}})
	if _, resp, err := websocket.DefaultDialer.Dial(u2, http.Header{"Origin": {"https://other.example.com"}}); err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("unlisted origin: got %v, want 403", err)
	}
	_, _, u3 := fanServer(t, Config{AllowedOrigins: []string{"*"}}, nil)
	dial(t, u3, http.Header{"Origin": {"https://anything.example"}})
}

// TestMalformedInputKeepsTheConnection: malformed frames are answered with
// an error envelope and the connection stays open; binary frames carry
// envelopes too.
func TestMalformedInputKeepsTheConnection(t *testing.T) {
	_, _, u := fanServer(t, Config{}, nil)
	ws := dial(t, u, nil)
	for _, in := range []string{`hello`, `[1,2]`, `{"service":"nope","message":{}}`, `{"service":"fan","message":{"command":"x","params":{},"callId":3}}`} {
		if err := ws.WriteMessage(websocket.TextMessage, []byte(in)); err != nil {
			t.Fatal(err)
		}
		ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, b, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		if !strings.Contains(string(b), `"type":"error"`) {
			t.Fatalf("%s: got %s, want an error envelope", in, b)
		}
	}
	if err := ws.WriteMessage(websocket.BinaryMessage, []byte(`{"service":"fan","message":{"command":"subscribe","params":{},"callId":9}}`)); err != nil {
		t.Fatal(err)
	}
	_, b, err := ws.ReadMessage()
	if err != nil || !strings.Contains(string(b), `"type":"response"`) || !strings.Contains(string(b), `"callId":9`) {
		t.Fatalf("binary frame after malformed input: got %s %v, want the response", b, err)
	}
}

// TestBadIdentityTokenInURLCloses4001: a token in the URL that the
// authenticator refuses closes the connection with 4001 and the
// authenticator's error as the reason; an accepted one serves.
func TestBadIdentityTokenInURLCloses4001(t *testing.T) {
	auth := func(c rpc.Conn, token string) error {
		if token != "good" {
			return errors.New("invalid identity token")
		}
		c.SetIdentity(&rpc.Identity{JSON: []byte(`"alice"`), Key: `"alice"`})
		return nil
	}
	_, _, u := fanServer(t, Config{}, auth)
	for _, bad := range []string{"garbage", "goo"} {
		ws := dial(t, u+"?token="+url.QueryEscape(bad), nil)
		if ce := closeCode(t, ws, 20*time.Second); ce.Code != rpc.CloseIdentity || ce.Text != "invalid identity token" {
			t.Fatalf("token %q: got %v, want close 4001 invalid identity token", bad, ce)
		}
	}
	ws := dial(t, u+"?token=good", nil)
	if m := call(t, ws, "fan", "subscribe", `{}`); m["type"] != "response" {
		t.Fatalf("accepted token: got %v, want a response", m)
	}
}

// TestRateLimit: a client over the rate limit is answered with the error
// and then closed with 4029, while another client's messages keep flowing.
func TestRateLimit(t *testing.T) {
	_, _, u := fanServer(t, Config{CommandsPerSecond: 20, RateLimitGrace: time.Second}, nil)
	abuser, other, listener := dial(t, u, nil), dial(t, u, nil), dial(t, u, nil)
	if m := call(t, listener, "fan", "subscribe", `{}`); m["type"] != "response" {
		t.Fatalf("subscribe: %v", m)
	}

	stop := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if err := abuser.WriteMessage(websocket.TextMessage, []byte(`{"service":"fan","message":{"command":"echo","params":{},"callId":1}}`)); err != nil {
				return
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	limited := 0
	abuser.SetReadDeadline(time.Now().Add(60 * time.Second))
	var closeErr error
	for {
		_, m, err := abuser.ReadMessage()
		if err != nil {
			closeErr = err
			break
		}
		if strings.Contains(string(m), `"message":"Rate limit exceeded"`) {
			limited++
		}
	}
	close(stop)
	<-writerDone
	var ce *websocket.CloseError
	if !errors.As(closeErr, &ce) || ce.Code != rpc.CloseRateLimited {
		t.Fatalf("abuser: got %v, want close 4029", closeErr)
	}
	if limited == 0 {
		t.Fatal("abuser never got \"Rate limit exceeded\"")
	}
	// The other client was never limited.
	for i := range 10 {
		if m := call(t, other, "fan", "publish", fmt.Sprintf(`{"i":%d}`, i)); m["type"] != "response" {
			t.Fatalf("other client, publish %d: got %v", i, m)
		}
		listener.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, b, err := listener.ReadMessage()
		if want := fmt.Sprintf(`"params":{"i":%d}`, i); err != nil || !strings.Contains(string(b), want) {
			t.Fatalf("listener: got %s %v, want message %d", b, err, i)
		}
	}
}

// TestSlowConsumerIsClosed: a client that never reads is closed once its
// queue passes the bound, while 50 other subscribers receive every message
// in order. The publisher runs at most a few messages ahead of the slowest
// reader, never of the client that does not read, so a starved CPU that
// pauses the readers cannot overflow their queues: only a broadcast that
// waited for the slow client would stall the test.
func TestSlowConsumerIsClosed(t *testing.T) {
	// Only the queue bound may close the slow client: the write timeout,
	// the lag bound and unanswered pings (it never reads, so it never
	// answers one) would on a machine slow enough.
	// The first connection accepted (the slow client's) gets a small,
	// fixed send buffer, so what the kernel holds for it is small beside
	// its queue.
	h, fan, u := fanServerOn(t, Config{SendQueueBytes: 256 << 10, WriteTimeout: time.Hour, MaxLag: time.Hour, PingInterval: -1}, nil,
		func(ln net.Listener) net.Listener { return &firstConnSmallBuffer{Listener: ln} })

	// The slow client: a tiny receive buffer, and it never reads.
	d := websocket.Dialer{NetDialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var serr error
			rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4096) })
			return serr
		}}
		return nd.DialContext(ctx, network, addr)
	}}
	slow, _, err := d.Dial(u, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	slow.WriteMessage(websocket.TextMessage, []byte(`{"service":"fan","message":{"command":"subscribe","params":{}}}`))

	const readers, messages, ahead = 50, 100, 4
	acks := make([]sync.WaitGroup, messages) // acks[i]: every reader has message i
	for i := range acks {
		acks[i].Add(readers)
	}
	errs := make([]error, readers)
	var wg sync.WaitGroup
	for r := range readers {
		ws := dial(t, u, nil)
		if m := call(t, ws, "fan", "subscribe", `{}`); m["type"] != "response" {
			t.Fatalf("reader %d subscribe: %v", r, m)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := 0
			defer func() { // release the publisher from what will not come
				for ; n < messages; n++ {
					acks[n].Done()
				}
			}()
			for n < messages {
				ws.SetReadDeadline(time.Now().Add(60 * time.Second))
				_, m, err := ws.ReadMessage()
				if err != nil {
					errs[r] = fmt.Errorf("after %d messages: %w", n, err)
					return
				}
				if want := fmt.Sprintf(`"params":{"i":%d,`, n); !strings.Contains(string(m), want) {
					errs[r] = fmt.Errorf("message %d: got %.80s, want %s", n, m, want)
					return
				}
				acks[n].Done()
				n++
			}
		}()
	}
	waitFor(t, "51 subscribers", func() bool { return fan.count() == readers+1 })
	// 100 messages of 16 KiB: 1.6 MB, six times what the slow client's
	// socket buffers and its 256 KiB queue hold.
	body := strings.Repeat("x", 16<<10)
	for i := range messages {
		if i >= ahead {
			acks[i-ahead].Wait()
		}
		fan.publish([]byte(fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, body)))
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Errorf("reader %d: %v", r, err)
		}
	}
	waitFor(t, "slow consumer closed", func() bool { return h.Len() == readers })
	if got := testutil.ToFloat64(h.SlowConsumerCloses()); got != 1 {
		t.Fatalf("slow consumer closes: got %v, want 1", got)
	}
}

func (f *fanout) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.subs)
}

// firstConnSmallBuffer gives the first accepted connection an 8 KiB send
// buffer (which turns off the kernel's growing of it).
type firstConnSmallBuffer struct {
	net.Listener
	once sync.Once
}

func (l *firstConnSmallBuffer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.once.Do(func() {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetWriteBuffer(8 << 10)
			}
		})
	}
	return c, err
}

// TestSlowRateAllowsAMessage: a rate under 0.25 messages/s rounded the
// burst to 0, which refuses every message.
func TestSlowRateAllowsAMessage(t *testing.T) {
	for _, r := range []float64{0.01, 0.2, 1} {
		if g := newRateGuard(r, time.Second); !g.limiter.Allow() {
			t.Errorf("commands_per_second %v: the first message refused", r)
		}
	}
}
