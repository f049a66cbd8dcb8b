package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// The hostile mix's limits (the server's configuration below); the RSS
// bound is derived from them.
const (
	hmMaxConns      = 600
	hmSendQueue     = 256 << 10
	hmMaxMessage    = 16 << 10
	hmNames         = 16
	hmNameBytes     = 256
	hmChannels      = 64
	hmChannelBytes  = 256
	hmSubscriptions = 8
	hmPending       = 128 << 10
)

// rssBound is the most the server may hold: its RSS before the clients,
// plus, for every connection max_connections allows, a full send queue, a
// message being read, its names and channels at their limits (twice their
// bytes for map and index overhead) and its subscriptions' pending deltas,
// plus 64 KiB of goroutine stacks and buffers. The race detector's shadow
// memory multiplies the connection part by up to 4.
func rssBound(base int64) int64 {
	perConn := int64(hmSendQueue + hmMaxMessage + 2*hmNames*hmNameBytes + 2*hmChannels*hmChannelBytes + 64<<10)
	perConn += hmSubscriptions * hmPending / 8 // pending deltas are held only until acquire; at most an eighth at once here
	f := int64(1)
	if raceEnabled {
		f = 4
	}
	return base + f*hmMaxConns*perConn
}

func vmRSS(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return -1
}

// hmClient is a minimal WebSocket client: it counts what it receives by
// kind and remembers how it was closed.
type hmClient struct {
	ws      *websocket.Conn
	wmu     sync.Mutex
	mu      sync.Mutex
	seqs    map[string][]int64 // "pubsub"/"chat"/"delta" → sequence numbers received
	closeCE *websocket.CloseError
	done    chan struct{}
}

func hmDial(t testing.TB, u string, read bool) (*hmClient, error) {
	d := websocket.Dialer{HandshakeTimeout: 20 * time.Second}
	ws, _, err := d.Dial(u, nil)
	if err != nil {
		return nil, err
	}
	c := &hmClient{ws: ws, seqs: map[string][]int64{}, done: make(chan struct{})}
	t.Cleanup(func() { ws.Close() })
	if !read {
		close(c.done)
		return c, nil
	}
	go func() {
		defer close(c.done)
		for {
			_, b, err := ws.ReadMessage()
			if err != nil {
				var ce *websocket.CloseError
				if errors.As(err, &ce) {
					c.mu.Lock()
					c.closeCE = ce
					c.mu.Unlock()
				}
				return
			}
			c.record(b)
		}
	}()
	return c, nil
}

func (c *hmClient) record(b []byte) {
	var env struct {
		Service string `json:"service"`
		Message struct {
			Type    string `json:"type"`
			Message struct {
				Seq int64 `json:"seq"`
			} `json:"message"`
			Body struct {
				Seq  int64  `json:"seq"`
				From string `json:"from"`
			} `json:"body"`
			Delta struct {
				Data struct {
					ID int64 `json:"id"`
				} `json:"data"`
			} `json:"delta"`
		} `json:"message"`
	}
	if json.Unmarshal(b, &env) != nil {
		return
	}
	m := env.Message
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case env.Service == "pubsub" && m.Type == "message" && m.Message.Seq > 0:
		c.seqs["pubsub"] = append(c.seqs["pubsub"], m.Message.Seq)
	case env.Service == "chat" && m.Type == "message" && m.Body.Seq > 0:
		c.seqs["chat"] = append(c.seqs["chat"], m.Body.Seq)
	case env.Service == "datasync" && m.Type == "delta":
		c.seqs["delta"] = append(c.seqs["delta"], m.Delta.Data.ID)
	}
}

func (c *hmClient) send(msg string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	return c.ws.WriteMessage(websocket.TextMessage, []byte(msg))
}

func (c *hmClient) got(kind string) []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int64(nil), c.seqs[kind]...)
}

func req(service, command string, params any) string {
	b, _ := json.Marshal(map[string]any{"service": service, "message": map[string]any{"command": command, "params": params, "callId": 1}})
	return string(b)
}

// TestHostileMix: for 60 s (SNORKY_TEST_HOSTILE_SECONDS; 15 s with -short)
// hostile clients register names and channels up to every limit, call
// listParticipants without reading, flood until closed with 4029 and
// reconnect, and hold idle sockets that are closed with 4002 and
// reconnected, while 100 normal clients use PubSub, Chat and DataSync. The
// normal clients lose nothing, and the server's RSS stays under rssBound.
func TestHostileMix(t *testing.T) {
	dur := 60 * time.Second
	if testing.Short() {
		dur = 15 * time.Second
	}
	if v, err := strconv.Atoi(os.Getenv("SNORKY_TEST_HOSTILE_SECONDS")); err == nil && v > 0 {
		dur = time.Duration(v) * time.Second
	}
	front, back := freeAddr(t), freeAddr(t)
	cfg := fmt.Sprintf(`frontend: {listen: %q, path: /ws, max_message_bytes: %d, send_queue_bytes: %d}
backend: {listen: %q, path: /backend, api_key: %q}
tokens: {secret: %q}
limits: {commands_per_second: 50, rate_limit_grace: 3s, idle_timeout: 5s, max_connections: %d, names_per_connection: %d, name_bytes: %d, channels_per_connection: %d, channel_bytes: %d, subscriptions_per_connection: %d, pending_bytes: %d}
models: {Item: {}}
dealers: {AllItems: {model: Item, kind: broadcast}}
log: {level: warn}
`, front, hmMaxMessage, hmSendQueue, back, apiKey, tokenSecret, hmMaxConns, hmNames, hmNameBytes, hmChannels, hmChannelBytes, hmSubscriptions, hmPending)
	path := filepath.Join(t.TempDir(), "snorky.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProc(t, path, front, back)
	p.waitReady(60 * time.Second)
	pid := p.cmd.Process.Pid
	wsURL := "ws://" + front + "/ws"
	base := vmRSS(pid)
	bound := rssBound(base)

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var maxRSS atomic.Int64
	wg.Add(1)
	go func() { // RSS sampler
		defer wg.Done()
		for {
			if r := vmRSS(pid); r > maxRSS.Load() {
				maxRSS.Store(r)
			}
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	mustDial := func(read bool) *hmClient {
		c, err := hmDial(t, wsURL, read)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		return c
	}

	// Normal clients: 40 PubSub subscribers, 40 Chat members, 20 DataSync
	// subscribers.
	var subs, chatters, syncers []*hmClient
	for range 40 {
		c := mustDial(true)
		c.send(req("pubsub", "subscribe", map[string]any{"channel": "news"}))
		subs = append(subs, c)
	}
	for i := range 40 {
		tok, rpcErr, err := p.backend("identity_backend", "authorizeIdentity", map[string]any{"identity": fmt.Sprintf("member%d", i)})
		if err != nil || rpcErr != "" {
			t.Fatalf("authorizeIdentity: %v %s", err, rpcErr)
		}
		var s string
		json.Unmarshal(tok, &s)
		c, err := hmDial(t, wsURL+"?token="+url.QueryEscape(s), true)
		if err != nil {
			t.Fatal(err)
		}
		c.send(req("chat", "join", map[string]any{"channel": "lobby"}))
		chatters = append(chatters, c)
	}
	for range 20 {
		tok, rpcErr, err := p.backend("datasync_backend", "authorizeSubscription", map[string]any{"items": []any{map[string]any{"dealer": "AllItems", "query": nil}}})
		if err != nil || rpcErr != "" {
			t.Fatalf("authorizeSubscription: %v %s", err, rpcErr)
		}
		var s string
		json.Unmarshal(tok, &s)
		c := mustDial(true)
		c.send(req("datasync", "acquireSubscription", map[string]any{"token": s}))
		syncers = append(syncers, c)
	}
	time.Sleep(time.Second) // every subscribe, join and acquire handled

	var pubSeq, chatSeq, deltaSeq atomic.Int64
	loop := func(every time.Duration, f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
					f()
				}
			}
		}()
	}
	publisher := mustDial(true)
	loop(50*time.Millisecond, func() { // PubSub: 20 messages/s (the limit is 50/s)
		n := pubSeq.Add(1)
		publisher.send(req("pubsub", "publish", map[string]any{"channel": "news", "message": map[string]any{"seq": n}}))
	})
	loop(100*time.Millisecond, func() { // Chat: 10 messages/s, from the members in turn
		n := chatSeq.Add(1)
		chatters[n%int64(len(chatters))].send(req("chat", "send", map[string]any{"channel": "lobby", "body": map[string]any{"seq": n}}))
	})
	loop(50*time.Millisecond, func() { // DataSync: 20 deltas/s from the backend
		n := deltaSeq.Add(1)
		if _, rpcErr, err := p.backend("datasync_backend", "publishDeltas", map[string]any{"deltas": []any{map[string]any{"type": "insert", "model": "Item", "data": map[string]any{"id": n}}}}); err != nil || rpcErr != "" {
			t.Errorf("publishDeltas: %v %s", err, rpcErr)
		}
	})

	// Hostile clients.
	var closes sync.Map // close code → *atomic.Int64
	countClose := func(c *hmClient) {
		<-c.done
		c.mu.Lock()
		ce := c.closeCE
		c.mu.Unlock()
		code := 0
		if ce != nil {
			code = ce.Code
		}
		v, _ := closes.LoadOrStore(code, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
	hostile := func(f func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				f()
			}
		}()
	}
	var namerN atomic.Int64
	for range 10 { // names and channels up to every limit, then listParticipants
		hostile(func() {
			c, err := hmDial(t, wsURL, true)
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				return
			}
			id := namerN.Add(1)
			for i := range hmNames + 1 {
				c.send(req("messaging", "registerParticipant", map[string]any{"name": fmt.Sprintf("%d-%d-%s", id, i, strings.Repeat("n", hmNameBytes-12))}))
			}
			for i := range hmChannels + 1 {
				c.send(req("pubsub", "subscribe", map[string]any{"channel": fmt.Sprintf("%d-%d-%s", id, i, strings.Repeat("c", hmChannelBytes-14))}))
			}
			for range 200 { // 40/s, under the limit
				c.send(req("messaging", "listParticipants", map[string]any{}))
				time.Sleep(25 * time.Millisecond)
			}
			c.ws.Close()
			<-c.done
		})
	}
	for range 3 { // listParticipants without reading
		hostile(func() {
			c, err := hmDial(t, wsURL, false)
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				return
			}
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				if c.send(req("messaging", "listParticipants", map[string]any{})) != nil {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			c.ws.Close()
		})
	}
	for range 4 { // floods until closed with 4029, then again
		hostile(func() {
			c, err := hmDial(t, wsURL, true)
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				return
			}
			flood := req("pubsub", "publish", map[string]any{"channel": "spam", "message": strings.Repeat("s", 200)})
			for {
				cycle := time.Now()
				for range 50 {
					if c.send(flood) != nil {
						break
					}
				}
				select {
				case <-c.done:
					countClose(c)
					return
				case <-stop:
					return
				case <-time.After(time.Until(cycle.Add(70 * time.Millisecond))):
				}
			}
		})
	}
	for range 300 { // idle sockets, closed with 4002 and opened again
		hostile(func() {
			c, err := hmDial(t, wsURL, true)
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				return
			}
			select {
			case <-c.done:
				countClose(c)
			case <-stop:
			}
		})
	}

	time.Sleep(dur)
	close(stop)
	wg.Wait()
	time.Sleep(2 * time.Second) // the last messages arrive

	// The normal clients lost nothing.
	checkSeq := func(who string, got []int64, want int64) {
		t.Helper()
		if strings.HasPrefix(who, "chat") {
			slices.Sort(got) // sent by different connections: no order between them
		}
		if int64(len(got)) != want {
			t.Errorf("%s: received %d, want %d", who, len(got), want)
			return
		}
		for i, v := range got {
			if v != int64(i+1) {
				t.Errorf("%s: message %d has seq %d, want %d", who, i, v, i+1)
				return
			}
		}
	}
	for i, c := range subs {
		checkSeq(fmt.Sprintf("pubsub subscriber %d", i), c.got("pubsub"), pubSeq.Load())
	}
	for i, c := range chatters {
		checkSeq(fmt.Sprintf("chat member %d", i), c.got("chat"), chatSeq.Load())
	}
	for i, c := range syncers {
		checkSeq(fmt.Sprintf("datasync subscriber %d", i), c.got("delta"), deltaSeq.Load())
	}
	for _, c := range append(append(append([]*hmClient{}, subs...), chatters...), syncers...) {
		select {
		case <-c.done:
			t.Errorf("a normal client was closed: %v", c.closeCE)
		default:
		}
	}
	var summary []string
	closes.Range(func(k, v any) bool {
		summary = append(summary, fmt.Sprintf("%v×%d", k, v.(*atomic.Int64).Load()))
		return true
	})
	count := func(code int) int64 {
		if v, ok := closes.Load(code); ok {
			return v.(*atomic.Int64).Load()
		}
		return 0
	}
	if count(4002) == 0 {
		t.Errorf("hostile closes %v: want 4002 for the idle sockets", summary)
	}
	if count(4029) == 0 {
		// How soon a flood is cut depends on how fast this loaded
		// process can send it; wsapi's tests assert the rule itself.
		t.Logf("no flooder was closed with 4029 within %v", dur)
	}
	peak := maxRSS.Load()
	t.Logf("%v of hostile mix: normal clients got %d PubSub messages, %d chat messages and %d deltas each, none lost; hostile closes by code %v; server RSS %.1f MiB before, peak %.1f MiB, bound %.1f MiB (derived from the limits)",
		dur, pubSeq.Load(), chatSeq.Load(), deltaSeq.Load(), summary, float64(base)/(1<<20), float64(peak)/(1<<20), float64(bound)/(1<<20))
	if peak > bound {
		t.Errorf("server RSS peaked at %d bytes, over the bound %d derived from the limits", peak, bound)
	}
	if strings.Contains(p.log.String(), "panic") {
		t.Error("the server log mentions a panic")
	}
}
