package main

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// TestT17TokenAndKeyAbuse: reliability.md T17. Every token abuse case is
// rejected with its error and gets no delta; 10,000 wrong API keys are
// refused, with correct-prefix and random keys taking the same time; the
// server's log holds no key, secret or token.
func TestT17TokenAndKeyAbuse(t *testing.T) {
	logs := &logBuffer{}
	s := startServerLog(t, dataSyncConfig+`tokens: {secret: "`+testSecret+`", acquire_timeout: 1s}`, logs)
	var secrets []string // every token and key the test handles, for the log check
	auth := func(items string) string {
		tok := authorize(t, s, items)
		secrets = append(secrets, tok)
		return tok
	}
	acquire := func(c *wsClient, tok string) map[string]any {
		return c.rpc("datasync", "acquireSubscription", map[string]any{"token": tok})
	}
	wantErr := func(what string, m map[string]any, want string) {
		t.Helper()
		if m["type"] != "error" || m["message"] != want {
			t.Errorf("%s: got %v, want error %q", what, m, want)
		}
	}

	owner := dial(t, s, nil)
	good := auth(`[{"dealer":"TaskFilter","query":["==","owner",7]}]`)
	if m := acquire(owner, good); m["type"] != "response" {
		t.Fatalf("acquire: %v", m)
	}
	attacker := dial(t, s, nil)

	// A reused one-time token.
	wantErr("reused token", acquire(attacker, good), "Subscription already acquired")

	// A tampered payload, and a widened filter re-encoded with the old MAC.
	raw, err := base64.RawURLEncoding.DecodeString(good)
	if err != nil {
		t.Fatal(err)
	}
	tampered := slices.Clone(raw)
	tampered[12] ^= 1
	wantErr("tampered payload", acquire(attacker, base64.RawURLEncoding.EncodeToString(tampered)), "No such subscription")
	widened := strings.Replace(string(raw), `["==","owner",7]`, `null`, 1)
	if widened == string(raw) {
		t.Fatalf("token payload %q does not carry the filter", raw)
	}
	wantErr("widened filter", acquire(attacker, base64.RawURLEncoding.EncodeToString([]byte(widened))), "No such subscription")

	// A token for another dealer cannot be turned into this one.
	other := auth(`[{"dealer":"TasksByColor","query":"red"}]`)
	retargeted := strings.Replace(string(mustDecode(t, other)), "TasksByColor", "AllTasks", 1)
	wantErr("retargeted dealer", acquire(attacker, base64.RawURLEncoding.EncodeToString([]byte(retargeted))), "No such subscription")

	// alg:none and HS/RS confusion: JWT-shaped tokens mean nothing here.
	none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"items":[{"dealer":"AllTasks","query":null}]}`)) + "."
	wantErr("alg none", acquire(attacker, none), "No such subscription")
	wantErr("alg none as identity", attacker.rpc("identity", "authenticate", map[string]any{"token": none}), "Invalid token")

	// A token signed for the other purpose, both ways.
	idTok := identityToken(t, s, "mallory")
	secrets = append(secrets, idTok)
	wantErr("identity token as subscription", acquire(attacker, idTok), "No such subscription")
	wantErr("subscription token as identity", attacker.rpc("identity", "authenticate", map[string]any{"token": other}), "Invalid token")

	// Expired: a subscription token past acquire_timeout (1 s), and an
	// identity token past its ttl, in a message and in the URL.
	var shortID string
	json.Unmarshal(backendOK(t, s, "identity_backend", "authorizeIdentity", map[string]any{"identity": "eve", "ttl": 1}), &shortID)
	secrets = append(secrets, shortID)
	late := auth(`[{"dealer":"AllTasks","query":null}]`)
	time.Sleep(1100 * time.Millisecond)
	wantErr("expired subscription token", acquire(attacker, late), "No such subscription")
	wantErr("expired identity token", attacker.rpc("identity", "authenticate", map[string]any{"token": shortID}), "Token expired")
	ws, _, err := websocket.DefaultDialer.Dial(s.frontendURL()+"?token="+url.QueryEscape(shortID), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = ws.ReadMessage()
	ws.Close()
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != rpc.CloseIdentity || ce.Text != "identity token expired" {
		t.Errorf("expired token in the URL: got %v, want close 4001 \"identity token expired\"", err)
	}
	// An oversize token is refused before any verification.
	wantErr("oversize token", acquire(attacker, strings.Repeat("A", 9000)), "Token too large (limits.token_bytes)")

	// The rightful owner gets the delta; the attacker nothing.
	backendOK(t, s, "datasync_backend", "publishDeltas", map[string]any{"deltas": []any{
		map[string]any{"type": "insert", "model": "Task", "data": map[string]any{"id": 1, "owner": 7}},
		map[string]any{"type": "insert", "model": "Task", "data": map[string]any{"id": 2, "owner": 8}},
	}})
	if m := owner.next(); m["message"].(map[string]any)["type"] != "delta" {
		t.Fatalf("owner: got %v, want its delta", m)
	}
	attacker.nothingQueued()
	owner.nothingQueued()

	// 10,000 wrong API keys: correct-prefix and random keys interleaved,
	// each timed. All refused.
	n := 5000 // of each kind
	if v, err := strconv.Atoi(os.Getenv("SNORKY_TEST_T17_KEYS")); err == nil && v > 0 {
		n = v
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	defer client.CloseIdleConnections()
	body := `{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"c","message":1}}}`
	try := func(key string) time.Duration {
		req, _ := http.NewRequest("POST", s.backendURL(), strings.NewReader(body))
		req.Header.Set("X-Backend-Key", key)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		took := time.Since(start)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong key %q: got HTTP %d, want 401", key, resp.StatusCode)
		}
		return took
	}
	prefix := testKey[:len(testKey)-1] + "#"
	var tPrefix, tRandom []float64
	var sample []string
	for i := range 2 * n {
		if i%2 == 0 {
			tPrefix = append(tPrefix, float64(try(prefix)))
			continue
		}
		b := make([]byte, len(testKey)*3/4)
		rand.Read(b)
		k := base64.RawURLEncoding.EncodeToString(b)
		if i%500 == 1 {
			sample = append(sample, k)
		}
		tRandom = append(tRandom, float64(try(k)))
	}
	mp, mr := trimmedMean(tPrefix), trimmedMean(tRandom)
	diff := math.Abs(mp-mr) / ((mp + mr) / 2)
	t.Logf("%d wrong API keys refused (401). Trimmed mean latency: correct-prefix %.1f µs, random %.1f µs, difference %.2f%% of the mean (T17 target < 1%%)", 2*n, mp/1e3, mr/1e3, 100*diff)
	if diff > 0.25 {
		t.Errorf("correct-prefix and random keys differ by %.1f%% of the mean latency, want far below 25%%", 100*diff)
	}

	// The log holds no key, secret or token.
	log := logs.String()
	if !strings.Contains(log, "level=") {
		t.Fatal("empty server log")
	}
	for _, v := range append(append(secrets, testKey, testSecret, prefix, good, none), sample...) {
		if strings.Contains(log, v) {
			t.Errorf("the server log contains a key, secret or token (%d bytes starting %.6q)", len(v), v)
		}
	}
	t.Logf("server log: %d bytes, %d lines, none with a key, secret or token", len(log), strings.Count(log, "\n"))
}

func mustDecode(t *testing.T, tok string) []byte {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// trimmedMean is the mean of the middle 90% of xs (drops scheduler
// outliers on a shared machine).
func trimmedMean(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	cut := len(s) / 20
	s = s[cut : len(s)-cut]
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	return sum / float64(len(s))
}

// TestT18ChatUnderAbuse: reliability.md T18. A client publishing 1,000
// messages/s in bursts (50 ms on, 20 ms off) against a 100/s limit is
// closed with 4029 within rate_limit_grace + 2 s, while 100 chat clients
// keep chatting (their p99 latency is reported); unauthorised publishes,
// subscriptions over the limit and long names are refused.
func TestT18ChatUnderAbuse(t *testing.T) {
	const grace = 3 * time.Second
	s := startServer(t, fmt.Sprintf("limits: {commands_per_second: 100, rate_limit_grace: %s, channels_per_connection: 128}\npubsub: {client_publish: true, client_publish_deny: [admin]}", grace))

	// The refusals.
	c := dial(t, s, nil)
	c.fails("pubsub", "publish", map[string]any{"channel": "admin.broadcast", "message": 1}, "Not authorized")
	refused := 0
	for i := range 200 {
		m := c.rpc("pubsub", "subscribe", map[string]any{"channel": fmt.Sprintf("ch%d", i)})
		if m["type"] == "error" {
			if m["message"] != "Too many channels (limits.channels_per_connection)" {
				t.Fatalf("subscription %d: %v", i, m)
			}
			refused++
		}
		time.Sleep(5 * time.Millisecond) // stay under the rate limit
	}
	if refused != 72 {
		t.Errorf("200 subscriptions against a limit of 128: %d refused, want 72", refused)
	}
	long := strings.Repeat("x", 1000)
	c.fails("pubsub", "subscribe", map[string]any{"channel": long}, "Channel too long (limits.channel_bytes)")
	c.fails("messaging", "registerParticipant", map[string]any{"name": long}, "Name too long (limits.name_bytes)")

	// 100 chat clients in one room.
	type member struct {
		ws   *websocket.Conn
		mu   sync.Mutex
		lat  []time.Duration // deliveries of messages sent during the abuse
		base []time.Duration // and before it
	}
	var abuseFrom atomic.Int64
	abuseFrom.Store(math.MaxInt64)
	members := make([]*member, 100)
	for i := range members {
		tok := identityToken(t, s, fmt.Sprintf("user%d", i))
		ws, _, err := websocket.DefaultDialer.Dial(s.frontendURL()+"?token="+url.QueryEscape(tok), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ws.Close() })
		ws.WriteMessage(websocket.TextMessage, []byte(`{"service":"chat","message":{"command":"join","params":{"channel":"room"},"callId":1}}`))
		members[i] = &member{ws: ws}
	}
	var wg sync.WaitGroup
	for _, m := range members {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				_, b, err := m.ws.ReadMessage()
				if err != nil {
					return
				}
				var env struct {
					Message struct {
						Type string `json:"type"`
						Body struct {
							Sent int64 `json:"sent"`
						} `json:"body"`
					} `json:"message"`
				}
				json.Unmarshal(b, &env)
				if sent := env.Message.Body.Sent; env.Message.Type == "message" && sent > 0 {
					d := time.Since(time.Unix(0, sent))
					m.mu.Lock()
					if sent >= abuseFrom.Load() {
						m.lat = append(m.lat, d)
					} else {
						m.base = append(m.base, d)
					}
					m.mu.Unlock()
				}
			}
		}()
	}
	time.Sleep(500 * time.Millisecond) // every join answered

	stopChat := make(chan struct{})
	var chatWG sync.WaitGroup
	chatWG.Add(1)
	go func() { // 25 chat messages/s, from the members in turn
		defer chatWG.Done()
		tick := time.NewTicker(40 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopChat:
				return
			case <-tick.C:
			}
			msg := fmt.Sprintf(`{"service":"chat","message":{"command":"send","params":{"channel":"room","body":{"sent":%d}}}}`, time.Now().UnixNano())
			members[i%len(members)].ws.WriteMessage(websocket.TextMessage, []byte(msg))
		}
	}()

	time.Sleep(4 * time.Second) // a baseline: chat without abuse

	// The abuser.
	abuser := dial(t, s, nil)
	abuseFrom.Store(time.Now().UnixNano())
	flood := []byte(`{"service":"pubsub","message":{"command":"publish","params":{"channel":"spam","message":"x"}}}`)
	start := time.Now()
	sent := 0
	var ce *websocket.CloseError
flood:
	for time.Since(start) < grace+10*time.Second {
		cycle := time.Now()
		for range 50 {
			if abuser.ws.WriteMessage(websocket.TextMessage, flood) != nil {
				break flood
			}
			sent++
		}
		select {
		case <-abuser.done:
			break flood
		case <-time.After(time.Until(cycle.Add(70 * time.Millisecond))):
		}
	}
	err := abuser.waitClose()
	took := time.Since(start)
	if !errors.As(err, &ce) || ce.Code != rpc.CloseRateLimited {
		t.Fatalf("abuser after %v and %d messages: got %v, want close 4029", took, sent, err)
	}
	// T18 asks for grace + 2 s: the figure is reported (style.md §22: no
	// assertion on wall-clock speed; waitClose bounds a hang).
	t.Logf("abuser closed %v after the abuse began (rate_limit_grace %v)", took.Round(time.Millisecond), grace)
	time.Sleep(2 * time.Second) // chat goes on after the abuse
	close(stopChat)
	chatWG.Wait()
	time.Sleep(500 * time.Millisecond)
	for _, m := range members {
		m.ws.Close()
	}
	wg.Wait()

	var all, base []time.Duration
	for _, m := range members {
		all = append(all, m.lat...)
		base = append(base, m.base...)
	}
	if len(all) < 10*100 || len(base) < 10*100 {
		t.Fatalf("%d chat deliveries during the abuse and %d before, want at least %d each", len(all), len(base), 10*100)
	}
	slices.Sort(all)
	slices.Sort(base)
	p50, p99 := all[len(all)/2], all[len(all)*99/100]
	t.Logf("abuser: %d messages in %v, closed 4029. Chat, 100 clients in one room: before the abuse %d deliveries, p50 %v, p99 %v; during it %d deliveries, p50 %v, p99 %v (T18 target p99 < 100 ms)",
		sent, took.Round(time.Millisecond), len(base), base[len(base)/2].Round(time.Microsecond), base[len(base)*99/100].Round(time.Microsecond),
		len(all), p50.Round(time.Microsecond), p99.Round(time.Microsecond))
	// A generous bound: the abuse must not make chat much slower than it
	// was without it (on a loaded machine both can be slow).
	if baseP99 := base[len(base)*99/100]; p99 > max(time.Second, 2*baseP99) {
		t.Errorf("chat p99 %v during the abuse (%v before it), want far below 1 s", p99, baseP99)
	}
}
