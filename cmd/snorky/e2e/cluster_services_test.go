package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

// This file checks, end to end, that PubSub, Messaging, Chat presence,
// Cursors and disconnectIdentity span the nodes of a cluster: NATS with
// JetStream embedded in the test process, snorky nodes as subprocesses,
// a real PostgreSQL database.

// servicesCluster is a running cluster for the services tests.
type servicesCluster struct {
	nodes []*proc
	name  string // cluster.name
	nats  string // NATS client URLs
	ttl   time.Duration
}

// startServicesCluster starts one NATS server and n snorky nodes sharing a
// fresh database, with cluster.presence_ttl ttl, and waits until each node
// is ready and one owns the slot (as startNodes, which cannot set the
// presence TTL).
func startServicesCluster(t *testing.T, n int, ttl time.Duration) *servicesCluster {
	t.Helper()
	nc := startNATS(t, 1)
	dbURL := pgtest.NewDatabase(t)
	db := dbConnect(t, dbURL)
	mustExec(t, db, `CREATE TABLE burst (seq int PRIMARY KEY, tx int NOT NULL)`)
	c := &servicesCluster{name: randomName("svc"), nats: nc.URLs(), ttl: ttl}
	slot := randomName("e2e_svc_")
	for range n {
		c.nodes = append(c.nodes, startServer(t, serverConfig{DatabaseURL: dbURL, Slot: slot, Migrate: true, Body: fmt.Sprintf(`cluster:
  name: %s
  nats: {url: %q}
  stream: {replicas: 1}
  presence_ttl: %s
datasync: {position_interval: 200ms, resume_wait: 20s}
%s`, c.name, c.nats, ttl, burstModels)}))
	}
	for _, p := range c.nodes {
		p.waitReady(90 * time.Second)
	}
	waitFor(t, 60*time.Second, "a node owning the slot", func() bool { return owner(c.nodes) >= 0 })
	for i, p := range c.nodes {
		t.Logf("node %d: %s (%s)", i, p.clusterDetail().Node, p.clusterDetail().Role)
	}
	return c
}

// bucketValues reads the cluster's key-value bucket snorky_<name>_<what>
// directly from NATS: key → value.
func (c *servicesCluster) bucketValues(t *testing.T, what string) map[string]string {
	t.Helper()
	nc, err := nats.Connect(c.nats)
	if err != nil {
		t.Fatalf("connecting to NATS: %v", err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "snorky_"+c.name+"_"+what)
	if err != nil {
		t.Fatalf("bucket snorky_%s_%s: %v", c.name, what, err)
	}
	keys, err := kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		t.Fatalf("listing bucket snorky_%s_%s: %v", c.name, what, err)
	}
	out := map[string]string{}
	for _, k := range keys {
		e, err := kv.Get(ctx, k)
		if err != nil {
			continue // deleted meanwhile
		}
		out[k] = string(e.Value())
	}
	return out
}

// identityToken asks p's identity_backend for a token of identity.
func identityToken(t *testing.T, p *proc, identity any) string {
	t.Helper()
	data, rpcErr, err := p.backend("identity_backend", "authorizeIdentity", map[string]any{"identity": identity})
	if err != nil || rpcErr != "" {
		t.Fatalf("authorizeIdentity(%v): %v %q", identity, err, rpcErr)
	}
	var tok string
	if err := json.Unmarshal(data, &tok); err != nil {
		t.Fatalf("authorizeIdentity(%v) returned %s: %v", identity, data, err)
	}
	return tok
}

// frameClient is a WebSocket client that keeps every notification it
// receives, of any service, and matches replies to requests by callId.
type frameClient struct {
	t    *testing.T
	name string
	ws   *websocket.Conn

	writeMu sync.Mutex
	nextID  int

	mu      sync.Mutex
	notes   []notification
	replies map[int]chan frameReply
	done    chan struct{}
	readErr error
}

// notification is one notification a frameClient received.
type notification struct {
	Service string
	Msg     map[string]any // the message object, numbers as json.Number
	Raw     string
	At      time.Time
}

func (n notification) typ() string { s, _ := n.Msg["type"].(string); return s }

// frameReply is a response or an error.
type frameReply struct {
	Service string
	Type    string
	Data    json.RawMessage
	Message string
}

// dialFrames connects to p's frontend, with an identity token in the URL
// when token is not empty; cleanup closes the connection.
func dialFrames(t *testing.T, p *proc, name, token string) *frameClient {
	t.Helper()
	u := "ws://" + p.front + "/ws"
	if token != "" {
		u += "?token=" + url.QueryEscape(token)
	}
	d := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, _, err := d.Dial(u, nil)
	if err != nil {
		t.Fatalf("%s: dialing %s: %v", name, p.front, err)
	}
	c := &frameClient{t: t, name: name, ws: ws, replies: map[int]chan frameReply{}, done: make(chan struct{})}
	go c.readLoop()
	t.Cleanup(func() {
		ws.Close()
		<-c.done
	})
	return c
}

func (c *frameClient) readLoop() {
	defer close(c.done)
	for {
		_, msg, err := c.ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			c.readErr = err
			c.mu.Unlock()
			return
		}
		now := time.Now()
		var env struct {
			Service json.RawMessage `json:"service"`
			Message map[string]any  `json:"message"`
		}
		dec := json.NewDecoder(bytes.NewReader(msg))
		dec.UseNumber()
		if err := dec.Decode(&env); err != nil || env.Message == nil {
			c.t.Errorf("%s: the server sent %q, not an envelope: %v", c.name, msg, err)
			continue
		}
		var service string
		_ = json.Unmarshal(env.Service, &service)
		typ, _ := env.Message["type"].(string)
		if typ == "response" || typ == "error" {
			var reply struct {
				Message struct {
					CallID  *int            `json:"callId"`
					Data    json.RawMessage `json:"data"`
					Message string          `json:"message"`
				} `json:"message"`
			}
			err := json.Unmarshal(msg, &reply)
			r := reply.Message
			if err != nil || r.CallID == nil {
				c.t.Errorf("%s: reply %s without a callId of ours: %v", c.name, msg, err)
				continue
			}
			c.mu.Lock()
			ch := c.replies[*r.CallID]
			delete(c.replies, *r.CallID)
			c.mu.Unlock()
			if ch == nil {
				c.t.Errorf("%s: reply %s to no pending call", c.name, msg)
				continue
			}
			ch <- frameReply{Service: service, Type: typ, Data: r.Data, Message: r.Message}
			continue
		}
		c.mu.Lock()
		c.notes = append(c.notes, notification{Service: service, Msg: env.Message, Raw: string(msg), At: now})
		c.mu.Unlock()
	}
}

// call sends a request and waits (30 s) for its reply.
func (c *frameClient) call(service, command string, params any) frameReply {
	c.t.Helper()
	c.writeMu.Lock()
	c.nextID++
	id := c.nextID
	ch := make(chan frameReply, 1)
	c.mu.Lock()
	c.replies[id] = ch
	c.mu.Unlock()
	msg, _ := json.Marshal(map[string]any{"service": service, "message": map[string]any{"command": command, "params": params, "callId": id}})
	err := c.ws.WriteMessage(websocket.TextMessage, msg)
	c.writeMu.Unlock()
	if err != nil {
		c.t.Fatalf("%s: writing %s.%s: %v", c.name, service, command, err)
	}
	select {
	case r := <-ch:
		return r
	case <-c.done:
		c.t.Fatalf("%s: %s.%s: connection ended: %v", c.name, service, command, c.err())
	case <-time.After(30 * time.Second):
		c.t.Fatalf("%s: %s.%s: no reply within 30s", c.name, service, command)
	}
	return frameReply{}
}

// ok is call that fails the test unless the reply is a response; it
// returns the response's data.
func (c *frameClient) ok(service, command string, params any) json.RawMessage {
	c.t.Helper()
	r := c.call(service, command, params)
	if r.Type != "response" {
		c.t.Fatalf("%s: %s.%s(%v): got %s %q, want a response", c.name, service, command, params, r.Type, r.Message)
	}
	return r.Data
}

// fails is call that fails the test unless the reply is the error want.
func (c *frameClient) fails(service, command string, params any, want string) {
	c.t.Helper()
	r := c.call(service, command, params)
	if r.Type != "error" || r.Message != want {
		c.t.Fatalf("%s: %s.%s(%v): got %s %q %s, want error %q", c.name, service, command, params, r.Type, r.Message, r.Data, want)
	}
}

func (c *frameClient) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

// received returns the notifications of service so far that match (all,
// when match is nil).
func (c *frameClient) received(service string, match func(notification) bool) []notification {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []notification
	for _, n := range c.notes {
		if n.Service == service && (match == nil || match(n)) {
			out = append(out, n)
		}
	}
	return out
}

// waitNotes waits until at least n notifications of service match, and
// returns them all.
func (c *frameClient) waitNotes(timeout time.Duration, service string, n int, what string, match func(notification) bool) []notification {
	c.t.Helper()
	var got []notification
	waitFor(c.t, timeout, fmt.Sprintf("%s: %d× %s", c.name, n, what), func() bool {
		got = c.received(service, match)
		return len(got) >= n
	})
	return got
}

// waitClose waits until the server closes the connection and returns the
// read error (a *websocket.CloseError for a close frame).
func (c *frameClient) waitClose(timeout time.Duration) error {
	c.t.Helper()
	select {
	case <-c.done:
		return c.err()
	case <-time.After(timeout):
		c.t.Fatalf("%s: still open after %v", c.name, timeout)
		return nil
	}
}

// isOpen reports whether the connection is still being read.
func (c *frameClient) isOpen() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// field reads msg[key] as a string ("" when absent or of another type).
func field(msg map[string]any, key string) string { s, _ := msg[key].(string); return s }

// sameJSON reports whether a decoded value (numbers as json.Number) and
// want are the same JSON value.
func sameJSON(got, want any) bool {
	a, err1 := json.Marshal(got)
	b, err2 := json.Marshal(want)
	if err1 != nil || err2 != nil {
		return false
	}
	var x, y any
	_ = json.Unmarshal(a, &x)
	_ = json.Unmarshal(b, &y)
	return reflect.DeepEqual(x, y)
}

// TestClusterPubSub: with a subscriber's channel held on node B only,
// 200 publishes made on node A, by a client and (every 20th) through
// pubsub_backend, reach each of B's two subscribers exactly once and in
// publish order, with the channel as given.
func TestClusterPubSub(t *testing.T) {
	start := time.Now()
	c := startServicesCluster(t, 2, 15*time.Second)
	a, b := c.nodes[0], c.nodes[1]
	channel := map[string]any{"room": 1, "topic": "news"}

	subs := []*frameClient{dialFrames(t, b, "subscriber 1 on B", ""), dialFrames(t, b, "subscriber 2 on B", "")}
	for _, s := range subs {
		if d := s.ok("pubsub", "subscribe", map[string]any{"channel": channel}); string(d) != "null" {
			t.Fatalf("subscribe: data %s, want null", d)
		}
	}
	pub := dialFrames(t, a, "publisher on A", "")

	// Node B's interest reaches NATS asynchronously after subscribe is
	// answered: probe until a publish from A gets through.
	isProbe := func(n notification) bool {
		m, _ := n.Msg["message"].(map[string]any)
		return n.typ() == "message" && m["probe"] != nil
	}
	probes := 0
	waitFor(t, 30*time.Second, "a probe published on A to reach B", func() bool {
		if len(subs[0].received("pubsub", isProbe)) > 0 && len(subs[1].received("pubsub", isProbe)) > 0 {
			return true
		}
		pub.ok("pubsub", "publish", map[string]any{"channel": channel, "message": map[string]any{"probe": probes}})
		probes++
		time.Sleep(50 * time.Millisecond)
		return false
	})
	t.Logf("cross-node interest established after %d probe(s)", probes)

	const total = 200
	viaBackend := 0
	for i := range total {
		msg := map[string]any{"seq": i, "text": fmt.Sprintf("message %d", i)}
		if i%20 == 10 {
			data, rpcErr, err := a.backend("pubsub_backend", "publish", map[string]any{"channel": channel, "message": msg})
			if err != nil || rpcErr != "" || string(data) != "null" {
				t.Fatalf("pubsub_backend.publish %d on A: %v %q %s", i, err, rpcErr, data)
			}
			viaBackend++
			continue
		}
		if d := pub.ok("pubsub", "publish", map[string]any{"channel": channel, "message": msg}); string(d) != "null" {
			t.Fatalf("publish %d: data %s, want null", i, d)
		}
	}
	isSeq := func(n notification) bool {
		m, _ := n.Msg["message"].(map[string]any)
		return n.typ() == "message" && m["seq"] != nil
	}
	for _, s := range subs {
		s.waitNotes(60*time.Second, "pubsub", total, "sequenced publishes", isSeq)
	}
	time.Sleep(500 * time.Millisecond) // anything extra would show now
	for _, s := range subs {
		got := s.received("pubsub", isSeq)
		if len(got) != total {
			t.Errorf("%s: %d sequenced messages, want %d exactly once each", s.name, len(got), total)
		}
		for i, n := range got {
			m := n.Msg["message"].(map[string]any)
			if want := json.Number(fmt.Sprint(i)); m["seq"] != want || m["text"] != fmt.Sprintf("message %d", i) {
				t.Errorf("%s: message %d is %s, want seq %d (in publish order)", s.name, i, n.Raw, i)
				break
			}
			if !sameJSON(n.Msg["channel"], channel) {
				t.Errorf("%s: message %d has channel %v, want %v", s.name, i, n.Msg["channel"], channel)
				break
			}
		}
		if other := s.received("pubsub", func(n notification) bool { return !isSeq(n) && !isProbe(n) }); len(other) > 0 {
			t.Errorf("%s: unexpected notifications: %s", s.name, other[0].Raw)
		}
		if p := len(s.received("pubsub", isProbe)); p > probes {
			t.Errorf("%s: %d probes received, but only %d were published", s.name, p, probes)
		}
	}
	if n := len(pub.received("pubsub", nil)); n != 0 {
		t.Errorf("the publisher, not subscribed, got %d notifications", n)
	}
	t.Logf("PubSub across nodes: %d messages (%d via pubsub_backend) from A reached 2 subscribers on B once each, in order; %v in all",
		total, viaBackend, time.Since(start).Round(time.Millisecond))
}

// TestClusterMessaging: a name registered on A cannot be registered on B
// ("Name already registered"); messages go both ways between A's and B's
// names; both nodes list every name; an unregistered name is free again on
// the other node; after A's SIGKILL its names become free on B within the
// presence TTL and a message to them is "Unknown destination".
func TestClusterMessaging(t *testing.T) {
	const ttl = 2 * time.Second
	c := startServicesCluster(t, 2, ttl)
	a, b := c.nodes[0], c.nodes[1]
	ca := dialFrames(t, a, "client on A", "")
	cb := dialFrames(t, b, "client on B", "")

	ca.ok("messaging", "registerParticipant", map[string]any{"name": "Alice"})
	ca.ok("messaging", "registerParticipant", map[string]any{"name": "Carol"})
	cb.fails("messaging", "registerParticipant", map[string]any{"name": "Alice"}, "Name already registered")
	ca.fails("messaging", "registerParticipant", map[string]any{"name": "Alice"}, "Name already registered")
	cb.ok("messaging", "registerParticipant", map[string]any{"name": "Bob"})
	ca.fails("messaging", "registerParticipant", map[string]any{"name": "Bob"}, "Name already registered")
	// B cannot send as A's name, nor unregister it.
	cb.fails("messaging", "send", map[string]any{"sender": "Alice", "dest": "Bob", "body": "forged"}, "Invalid sender")

	for _, x := range []*frameClient{ca, cb} {
		var names []string
		if err := json.Unmarshal(x.ok("messaging", "listParticipants", map[string]any{}), &names); err != nil {
			t.Fatal(err)
		}
		if want := []string{"Alice", "Bob", "Carol"}; !slices.Equal(names, want) {
			t.Errorf("%s: listParticipants = %q, want %q", x.name, names, want)
		}
	}

	body := map[string]any{"text": "Hi, Alice.", "n": 1}
	if d := cb.ok("messaging", "send", map[string]any{"sender": "Bob", "dest": "Alice", "body": body}); string(d) != "null" {
		t.Errorf("send: data %s, want null", d)
	}
	isMsg := func(n notification) bool { return n.typ() == "message" }
	got := ca.waitNotes(30*time.Second, "messaging", 1, "Bob's message", isMsg)
	if m := got[0].Msg; m["sender"] != "Bob" || m["dest"] != "Alice" || !sameJSON(m["body"], body) {
		t.Errorf("A got %s, want Bob's message to Alice", got[0].Raw)
	}
	ca.ok("messaging", "send", map[string]any{"sender": "Carol", "dest": "Bob", "body": "Hi, Bob."})
	got = cb.waitNotes(30*time.Second, "messaging", 1, "Carol's message", isMsg)
	if m := got[0].Msg; m["sender"] != "Carol" || m["dest"] != "Bob" || m["body"] != "Hi, Bob." {
		t.Errorf("B got %s, want Carol's message to Bob", got[0].Raw)
	}
	// In order, each once.
	for i := range 20 {
		cb.ok("messaging", "send", map[string]any{"sender": "Bob", "dest": "Carol", "body": i})
	}
	cb.fails("messaging", "send", map[string]any{"sender": "Bob", "dest": "Nobody", "body": 0}, "Unknown destination")
	ca.waitNotes(30*time.Second, "messaging", 21, "21 messages", isMsg)
	time.Sleep(300 * time.Millisecond)
	msgs := ca.received("messaging", isMsg)
	if len(msgs) != 21 {
		t.Errorf("A got %d messages, want 21", len(msgs))
	}
	for i, n := range msgs[1:] {
		if n.Msg["sender"] != "Bob" || n.Msg["dest"] != "Carol" || n.Msg["body"] != json.Number(fmt.Sprint(i)) {
			t.Errorf("A's message %d is %s, want Bob→Carol body %d", i+1, n.Raw, i)
			break
		}
	}
	if n := len(cb.received("messaging", isMsg)); n != 1 {
		t.Errorf("B got %d messages, want 1", n)
	}

	// A released name is free again on B (the release reaches the bucket
	// asynchronously).
	ca.ok("messaging", "unregisterParticipant", map[string]any{"name": "Carol"})
	waitFor(t, 30*time.Second, "Carol, unregistered on A, to be registrable on B", func() bool {
		r := cb.call("messaging", "registerParticipant", map[string]any{"name": "Carol"})
		if r.Type == "error" && r.Message != "Name already registered" {
			t.Fatalf("registerParticipant Carol on B: %q", r.Message)
		}
		return r.Type == "response"
	})
	ca.fails("messaging", "registerParticipant", map[string]any{"name": "Carol"}, "Name already registered")

	// A dies without a goodbye: Alice is freed within the TTL.
	a.kill()
	killed := time.Now()
	var freed time.Duration
	waitFor(t, 4*ttl+5*time.Second, "Alice, A's name, to be free on B after A's SIGKILL", func() bool {
		r := cb.call("messaging", "registerParticipant", map[string]any{"name": "Alice"})
		if r.Type == "response" {
			freed = time.Since(killed)
			return true
		}
		if r.Message != "Name already registered" {
			t.Fatalf("registerParticipant Alice on B after the kill: %q", r.Message)
		}
		time.Sleep(50 * time.Millisecond)
		return false
	})
	var names []string
	if err := json.Unmarshal(cb.ok("messaging", "listParticipants", map[string]any{}), &names); err != nil {
		t.Fatal(err)
	}
	if want := []string{"Alice", "Bob", "Carol"}; !slices.Equal(names, want) {
		t.Errorf("B after the kill: listParticipants = %q, want %q", names, want)
	}
	t.Logf("Messaging across nodes: names unique, messages both ways; A's name free on B %v after A's SIGKILL (presence TTL %v)",
		freed.Round(time.Millisecond), ttl)
}

// TestClusterChat: alice and erin on A, bob and erin's second device on
// B, in one channel. B's first join there lists A's members; A is told bob
// joined, but nobody is told erin joined again; messages go to every
// connection once; erin's read receipt on A reaches her device on B only.
// When A is killed (SIGKILL), B's connections are told alice left within
// the presence TTL and a margin, and not that erin left (her device on B
// is still there).
func TestClusterChat(t *testing.T) {
	const ttl = 2 * time.Second
	c := startServicesCluster(t, 2, ttl)
	a, b := c.nodes[0], c.nodes[1]
	alice := dialFrames(t, a, "alice on A", identityToken(t, a, "alice"))
	erinA := dialFrames(t, a, "erin on A", identityToken(t, a, "erin"))
	bob := dialFrames(t, b, "bob on B", "")
	if got := bob.ok("identity", "authenticate", map[string]any{"token": identityToken(t, a, "bob")}); string(got) != `"bob"` {
		t.Fatalf("authenticate on B with a token of A: %s, want \"bob\"", got)
	}
	erinB := dialFrames(t, b, "erin on B", identityToken(t, b, "erin"))
	ch := "#cats"
	join := func(x *frameClient) []string {
		t.Helper()
		data := x.ok("chat", "join", map[string]any{"channel": ch})
		var r struct {
			Members []string `json:"members"`
		}
		if err := json.Unmarshal(data, &r); err != nil {
			t.Fatalf("%s: join reply %s: %v", x.name, data, err)
		}
		sort.Strings(r.Members)
		return r.Members
	}
	isPresence := func(from, status string) func(notification) bool {
		return func(n notification) bool {
			return n.typ() == "presence" && field(n.Msg, "from") == from && field(n.Msg, "status") == status
		}
	}
	isAnyPresence := func(n notification) bool { return n.typ() == "presence" }

	if m := join(alice); !slices.Equal(m, []string{"alice"}) {
		t.Fatalf("alice's join: members %q, want [alice]", m)
	}
	if m := join(erinA); !slices.Equal(m, []string{"alice", "erin"}) {
		t.Fatalf("erin's join on A: members %q, want [alice erin]", m)
	}
	alice.waitNotes(30*time.Second, "chat", 1, "erin joined", isPresence("erin", "joined"))
	// A writes its record after a join is answered: wait until the bucket
	// holds both of A's members, then B's first join there must list them.
	waitFor(t, 30*time.Second, "A's record of alice and erin in the chat bucket", func() bool {
		for _, v := range c.bucketValues(t, "chat") {
			if strings.Contains(v, `"alice"`) && strings.Contains(v, `"erin"`) {
				return true
			}
		}
		return false
	})
	if m := join(bob); !slices.Equal(m, []string{"alice", "bob", "erin"}) {
		t.Fatalf("bob's join, the first on B: members %q, want [alice bob erin]", m)
	}
	for _, x := range []*frameClient{alice, erinA} {
		x.waitNotes(30*time.Second, "chat", 1, "bob joined", isPresence("bob", "joined"))
	}
	if m := join(erinB); !slices.Equal(m, []string{"alice", "bob", "erin"}) {
		t.Fatalf("erin's join on B: members %q, want [alice bob erin]", m)
	}

	alice.ok("chat", "send", map[string]any{"channel": ch, "body": "meow"})
	bob.ok("chat", "send", map[string]any{"channel": ch, "body": "purr"})
	erinA.ok("chat", "read", map[string]any{"channel": ch})
	all := []*frameClient{alice, erinA, bob, erinB}
	isMessage := func(n notification) bool { return n.typ() == "message" }
	isRead := func(n notification) bool { return n.typ() == "read" }
	for _, x := range all {
		x.waitNotes(30*time.Second, "chat", 2, "two messages", isMessage)
	}
	erinB.waitNotes(30*time.Second, "chat", 1, "erin's read receipt", isRead)
	time.Sleep(500 * time.Millisecond) // anything extra would show now
	for _, x := range all {
		got := x.received("chat", isMessage)
		if len(got) != 2 {
			t.Errorf("%s: %d messages, want 2", x.name, len(got))
		}
		seen := map[string]bool{}
		for _, n := range got {
			from, body := field(n.Msg, "from"), field(n.Msg, "body")
			if !(from == "alice" && body == "meow" || from == "bob" && body == "purr") || n.Msg["channel"] != ch ||
				!strings.HasSuffix(field(n.Msg, "timestamp"), "Z") {
				t.Errorf("%s: unexpected message %s", x.name, n.Raw)
			}
			seen[from] = true
		}
		if !seen["alice"] || !seen["bob"] {
			t.Errorf("%s: got messages from %v, want alice's and bob's", x.name, seen)
		}
		wantReads := 0
		if x == erinB {
			wantReads = 1
		}
		if r := x.received("chat", isRead); len(r) != wantReads {
			t.Errorf("%s: %d read receipts, want %d", x.name, len(r), wantReads)
		} else if wantReads == 1 && (r[0].Msg["channel"] != ch || !strings.HasSuffix(field(r[0].Msg, "timestamp"), "Z")) {
			t.Errorf("%s: read receipt %s", x.name, r[0].Raw)
		}
	}
	// Presence so far: alice saw erin and bob join; erin on A saw bob join;
	// nobody on B saw anything (they joined after alice and erin), and
	// nobody saw erin join twice.
	for x, want := range map[*frameClient]int{alice: 2, erinA: 1, bob: 0, erinB: 0} {
		if got := x.received("chat", isAnyPresence); len(got) != want {
			var raw []string
			for _, n := range got {
				raw = append(raw, n.Raw)
			}
			t.Errorf("%s: %d presence notifications, want %d: %s", x.name, len(got), want, raw)
		}
	}

	a.kill()
	killed := time.Now()
	var after time.Duration
	for _, x := range []*frameClient{bob, erinB} {
		got := x.waitNotes(4*ttl+5*time.Second, "chat", 1, "alice left after A's SIGKILL", isPresence("alice", "left"))
		if got[0].Msg["channel"] != ch {
			t.Errorf("%s: leave notification %s: want channel %s", x.name, got[0].Raw, ch)
		}
		after = max(after, got[0].At.Sub(killed))
	}
	time.Sleep(500 * time.Millisecond)
	for _, x := range []*frameClient{bob, erinB} {
		if n := x.received("chat", isPresence("alice", "left")); len(n) != 1 {
			t.Errorf("%s got alice's leave %d times, want once", x.name, len(n))
		}
		if n := x.received("chat", isPresence("erin", "left")); len(n) != 0 {
			t.Errorf("%s was told erin left, though her device on B is still in the channel: %s", x.name, n[0].Raw)
		}
	}
	// The channel now holds bob and erin's device on B.
	bob.ok("chat", "leave", map[string]any{"channel": ch})
	if m := join(bob); !slices.Equal(m, []string{"bob", "erin"}) {
		t.Errorf("bob's join after A's death: members %q, want [bob erin]", m)
	}
	t.Logf("Chat across nodes: B's first join listed A's members; B saw A's member leave %v after A's SIGKILL (presence TTL %v)", after.Round(time.Millisecond), ttl)
}

// TestClusterCursors: a cursor created on A reaches B (in B's join reply
// or as cursorAdded, never both), A's updates reach B, B's cursor reaches
// A with a distinct public handle, and after A's SIGKILL B is told A's
// cursor was removed within the presence TTL and a margin.
func TestClusterCursors(t *testing.T) {
	const ttl = 2 * time.Second
	c := startServicesCluster(t, 2, ttl)
	a, b := c.nodes[0], c.nodes[1]
	alice := dialFrames(t, a, "alice on A", identityToken(t, a, "alice"))
	bob := dialFrames(t, b, "bob on B", identityToken(t, b, "bob"))
	doc := map[string]any{"sheet": 1}

	type cursor struct {
		PublicHandle *int            `json:"publicHandle"`
		Document     json.RawMessage `json:"document"`
		Position     json.RawMessage `json:"position"`
		Status       json.RawMessage `json:"status"`
		Owner        json.RawMessage `json:"owner"`
	}
	joinCursors := func(x *frameClient) []cursor {
		t.Helper()
		var r struct {
			Cursors []cursor `json:"cursors"`
		}
		data := x.ok("cursors", "join", map[string]any{"document": doc})
		if err := json.Unmarshal(data, &r); err != nil {
			t.Fatalf("%s: join reply %s: %v", x.name, data, err)
		}
		return r.Cursors
	}
	noteCursor := func(n notification) cursor {
		var cur cursor
		b, _ := json.Marshal(n.Msg["cursor"])
		_ = json.Unmarshal(b, &cur)
		return cur
	}
	if cs := joinCursors(alice); len(cs) != 0 {
		t.Fatalf("alice's join: cursors %v, want none", cs)
	}
	var h int
	if err := json.Unmarshal(alice.ok("cursors", "createCursor", map[string]any{
		"privateHandle": "p1", "document": doc, "position": 12, "status": "focused"}), &h); err != nil {
		t.Fatal(err)
	}
	if h < 0 || h > 65535 {
		t.Fatalf("publicHandle %d not in 0–65535", h)
	}

	isFor := func(typ string, handle int) func(notification) bool {
		return func(n notification) bool {
			cur := noteCursor(n)
			return n.typ() == typ && cur.PublicHandle != nil && *cur.PublicHandle == handle
		}
	}
	checkCursor := func(what string, cur cursor, pos, status string) {
		t.Helper()
		if !sameJSONText(cur.Document, doc) || string(cur.Position) != pos || string(cur.Status) != status || string(cur.Owner) != `"alice"` {
			t.Errorf("%s: cursor document %s position %s status %s owner %s, want %v %s %s \"alice\"",
				what, cur.Document, cur.Position, cur.Status, cur.Owner, doc, pos, status)
		}
	}
	listed := false
	for _, cur := range joinCursors(bob) {
		if cur.PublicHandle != nil && *cur.PublicHandle == h {
			checkCursor("bob's join reply", cur, "12", `"focused"`)
			listed = true
		} else {
			t.Errorf("bob's join reply lists an unknown cursor %+v", cur)
		}
	}
	if !listed {
		got := bob.waitNotes(30*time.Second, "cursors", 1, "cursorAdded for alice's cursor", isFor("cursorAdded", h))
		checkCursor("cursorAdded", noteCursor(got[0]), "12", `"focused"`)
	}
	t.Logf("alice's cursor reached B in its join reply: %v", listed)

	const updates = 20
	for i := 1; i <= updates; i++ {
		alice.ok("cursors", "updateCursor", map[string]any{"privateHandle": "p1", "newData": map[string]any{"position": 12 + i, "status": "writing", "ignored": true}})
	}
	want := fmt.Sprint(12 + updates)
	waitFor(t, 30*time.Second, "bob to see alice's last update", func() bool {
		got := bob.received("cursors", isFor("cursorUpdated", h))
		return len(got) > 0 && string(noteCursor(got[len(got)-1]).Position) == want
	})

	var hb int
	if err := json.Unmarshal(bob.ok("cursors", "createCursor", map[string]any{
		"privateHandle": "p1", "document": doc, "position": 1, "status": nil}), &hb); err != nil {
		t.Fatal(err)
	}
	if hb == h {
		t.Errorf("bob's cursor on B got public handle %d, the same as alice's on A", hb)
	}
	got := alice.waitNotes(30*time.Second, "cursors", 1, "cursorAdded for bob's cursor", isFor("cursorAdded", hb))
	if cur := noteCursor(got[0]); string(cur.Owner) != `"bob"` || string(cur.Position) != "1" {
		t.Errorf("alice got %s, want bob's cursor at 1", got[0].Raw)
	}
	// A cursor created and removed on B is added and removed on A.
	var hb2 int
	if err := json.Unmarshal(bob.ok("cursors", "createCursor", map[string]any{
		"privateHandle": "p2", "document": doc, "position": 2, "status": "idle"}), &hb2); err != nil {
		t.Fatal(err)
	}
	alice.waitNotes(30*time.Second, "cursors", 1, "cursorAdded for bob's second cursor", isFor("cursorAdded", hb2))
	bob.ok("cursors", "removeCursor", map[string]any{"privateHandle": "p2"})
	alice.waitNotes(30*time.Second, "cursors", 1, "cursorRemoved for bob's second cursor", isFor("cursorRemoved", hb2))
	time.Sleep(300 * time.Millisecond)
	if n := len(alice.received("cursors", isFor("cursorRemoved", hb2))); n != 1 {
		t.Errorf("alice got %d cursorRemoved for bob's second cursor, want 1", n)
	}
	if hb2 == h || hb2 == hb {
		t.Errorf("bob's second cursor got handle %d, in use (alice's %d, bob's %d)", hb2, h, hb)
	}
	ups := bob.received("cursors", isFor("cursorUpdated", h))
	prev := 12
	for _, n := range ups {
		cur := noteCursor(n)
		checkCursor("cursorUpdated", cur, string(cur.Position), `"writing"`)
		var p int
		_ = json.Unmarshal(cur.Position, &p)
		if p <= prev {
			t.Errorf("bob got cursorUpdated positions out of order: %d after %d", p, prev)
		}
		prev = p
	}
	if n := len(bob.received("cursors", isFor("cursorAdded", h))); listed && n != 0 || !listed && n != 1 {
		t.Errorf("bob got %d cursorAdded for alice's cursor (listed in join reply: %v)", n, listed)
	}
	if n := alice.received("cursors", func(n notification) bool {
		return noteCursor(n).PublicHandle != nil && *noteCursor(n).PublicHandle == h
	}); len(n) != 0 {
		t.Errorf("alice was notified of her own cursor: %s", n[0].Raw)
	}
	t.Logf("bob got %d cursorUpdated for %d updates", len(ups), updates)

	a.kill()
	killed := time.Now()
	got = bob.waitNotes(4*ttl+5*time.Second, "cursors", 1, "cursorRemoved for alice's cursor after A's SIGKILL", isFor("cursorRemoved", h))
	after := got[0].At.Sub(killed)
	if !sameJSONText(noteCursor(got[0]).Document, doc) {
		t.Errorf("cursorRemoved %s: want document %v", got[0].Raw, doc)
	}
	time.Sleep(300 * time.Millisecond)
	if n := len(bob.received("cursors", isFor("cursorRemoved", h))); n != 1 {
		t.Errorf("bob got %d cursorRemoved for alice's cursor, want 1", n)
	}
	if n := len(bob.received("cursors", isFor("cursorRemoved", hb))); n != 0 {
		t.Errorf("bob was told his own cursor was removed")
	}
	// A fresh connection on B sees bob's cursor only.
	carol := dialFrames(t, b, "carol on B", identityToken(t, b, "carol"))
	cs := joinCursors(carol)
	if len(cs) != 1 || cs[0].PublicHandle == nil || *cs[0].PublicHandle != hb {
		t.Errorf("carol's join after A's death: cursors %+v, want only bob's (%d)", cs, hb)
	}
	t.Logf("Cursors across nodes: B saw A's cursor removed %v after A's SIGKILL (presence TTL %v)", after.Round(time.Millisecond), ttl)
}

// sameJSONText reports whether raw JSON text and a Go value are the same
// JSON value.
func sameJSONText(raw json.RawMessage, want any) bool {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		return false
	}
	return sameJSON(v, want)
}

// TestClusterDisconnectIdentity: carol is connected on A (token in the
// URL) and on B (authenticate); disconnectIdentity called on A's backend
// answers 2 and closes both with 4001 "identity revoked"; dave's
// connection on B stays open, and disconnectIdentity of dave called on A
// (he is only on B) answers 1 and closes him.
func TestClusterDisconnectIdentity(t *testing.T) {
	c := startServicesCluster(t, 2, 15*time.Second)
	a, b := c.nodes[0], c.nodes[1]
	carolA := dialFrames(t, a, "carol on A", identityToken(t, a, "carol"))
	carolB := dialFrames(t, b, "carol on B", "")
	if got := carolB.ok("identity", "authenticate", map[string]any{"token": identityToken(t, b, "carol")}); string(got) != `"carol"` {
		t.Fatalf("authenticate: %s, want \"carol\"", got)
	}
	dave := dialFrames(t, b, "dave on B", identityToken(t, b, "dave"))
	anon := dialFrames(t, a, "anonymous on A", "")
	for _, x := range []*frameClient{carolA, carolB, dave, anon} {
		x.ok("pubsub", "subscribe", map[string]any{"channel": "c"}) // the connection is up
	}

	start := time.Now()
	data, rpcErr, err := a.backend("identity_backend", "disconnectIdentity", map[string]any{"identity": "carol"})
	took := time.Since(start)
	if err != nil || rpcErr != "" {
		t.Fatalf("disconnectIdentity(carol) on A: %v %q", err, rpcErr)
	}
	if string(data) != "2" {
		t.Errorf("disconnectIdentity(carol) on A answered %s, want 2 (one connection on A, one on B)", data)
	}
	for _, x := range []*frameClient{carolA, carolB} {
		var ce *websocket.CloseError
		if err := x.waitClose(30 * time.Second); !errors.As(err, &ce) || ce.Code != 4001 || ce.Text != "identity revoked" {
			t.Errorf("%s: got %v, want close 4001 \"identity revoked\"", x.name, err)
		}
	}
	time.Sleep(300 * time.Millisecond)
	for _, x := range []*frameClient{dave, anon} {
		if !x.isOpen() {
			t.Fatalf("%s was closed too: %v", x.name, x.err())
		}
		x.ok("pubsub", "unsubscribe", map[string]any{"channel": "c"})
	}

	data, rpcErr, err = a.backend("identity_backend", "disconnectIdentity", map[string]any{"identity": "dave"})
	if err != nil || rpcErr != "" {
		t.Fatalf("disconnectIdentity(dave) on A: %v %q", err, rpcErr)
	}
	if string(data) != "1" {
		t.Errorf("disconnectIdentity(dave) on A answered %s, want 1 (his connection on B)", data)
	}
	var ce *websocket.CloseError
	if err := dave.waitClose(30 * time.Second); !errors.As(err, &ce) || ce.Code != 4001 || ce.Text != "identity revoked" {
		t.Errorf("dave: got %v, want close 4001 \"identity revoked\"", err)
	}
	data, rpcErr, err = b.backend("identity_backend", "disconnectIdentity", map[string]any{"identity": "nobody"})
	if err != nil || rpcErr != "" || string(data) != "0" {
		t.Errorf("disconnectIdentity(nobody) on B: %s %v %q, want 0", data, err, rpcErr)
	}
	if !anon.isOpen() {
		t.Errorf("the anonymous connection on A was closed: %v", anon.err())
	}
	t.Logf("disconnectIdentity across nodes: counted 2 and closed both with 4001 in %v", took.Round(time.Millisecond))
}
