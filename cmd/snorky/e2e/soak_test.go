package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
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
	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cdc/pglocal"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

// TestT20Soak is reliability.md T20 at CI scale: 500 WebSocket clients,
// each with a DataSync subscription over CDC (one of 50 rooms, a simple
// dealer) and a Chat channel (its room), 200 single-row transactions a
// second, 5% of the clients reconnecting and resuming each minute, and one
// PostgreSQL restart half-way. At the end a checker compares what each
// client got with the table (0 lost deltas, commit order), and the server's
// RSS, goroutines and open files are compared with their levels before and
// after, and its live heap (after a forced collection) at the end of the
// warm-up with the end: RSS settles over minutes, the live heap tells a
// leak within the CI run's three. SNORKY_SOAK sets the duration (default 3m; e.g. SNORKY_SOAK=60m by
// hand); SNORKY_SOAK_CLIENTS the number of clients; SNORKY_SOAK_PROFILES a
// directory where the server's heap profiles after the warm-up and at the
// end are saved (heap-warm.pb.gz, heap-end.pb.gz: compare them with
// `go tool pprof -diff_base`). Skipped with -short.
func TestT20Soak(t *testing.T) {
	if testing.Short() {
		t.Skip("soak: skipped with -short")
	}
	duration := 3 * time.Minute
	if v := os.Getenv("SNORKY_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("SNORKY_SOAK=%q: %v", v, err)
		}
		duration = d
	}
	nClients := 500
	if v := os.Getenv("SNORKY_SOAK_CLIENTS"); v != "" {
		fmt.Sscan(v, &nClients)
	}
	const (
		rooms        = 50
		writesPerSec = 200
	)
	// Warm-up lasts until the replay window (history.max_age, 2m) is full:
	// before that the server's memory grows by design.
	warmup := max(duration/5, 2*time.Minute)
	if warmup > duration*3/4 {
		warmup = duration / 2
	}

	pg := pgtest.StartTB(t, pglocal.Options{})
	url := pgtest.NewDatabaseAt(t, pg.URL("postgres"))
	mustExec(t, dbConnect(t, url), `CREATE TABLE soak (id bigint PRIMARY KEY, room int NOT NULL, body text NOT NULL)`)
	profiles := os.Getenv("SNORKY_SOAK_PROFILES")
	p := startSoakServer(t, true, serverConfig{DatabaseURL: url, Slot: randomName("e2e_soak_"), Migrate: true, Body: `models:
  Item: {table: soak}
dealers:
  ByRoom: {model: Item, kind: simple, key: room}
datasync: {position_interval: 1s, resume_wait: 20s}
`})
	p.waitReady(60 * time.Second)
	baseG, _ := p.metric("go_goroutines")
	baseFD := p.openFiles()
	cpu0, t0 := p.cpuTime(), time.Now()

	// The clients: each subscribes to its room and joins its room's chat.
	clients := make([]*soakClient, nClients)
	for i := range clients {
		c := &soakClient{t: t, p: p, n: i, room: i % rooms, seen: map[int64]bool{}}
		c.identity = p.mustIdentity(fmt.Sprintf("user-%d", i))
		c.connect()
		tok := p.mustAuthorize([]map[string]any{item("ByRoom", c.room)}, "")
		r := c.call("datasync", "acquireSubscription", map[string]any{"token": tok, "resumable": true})
		if r.Type != "response" {
			t.Fatalf("client %d: acquireSubscription: %s %q", i, r.Type, r.Message)
		}
		if err := json.Unmarshal(r.Data, &c.res); err != nil {
			t.Fatalf("client %d: acquire result %s: %v", i, r.Data, err)
		}
		clients[i] = c
	}
	defer func() {
		for _, c := range clients {
			c.close()
		}
	}()
	withClientsG, _ := p.metric("go_goroutines")

	// The writer: one row per transaction, writesPerSec a second, on its
	// own connection, reopened after an error.
	var (
		wmu      sync.Mutex
		commitAt = map[int64]time.Time{}
		failed   int
	)
	stopWrites := make(chan struct{})
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		var conn *pgx.Conn
		defer func() {
			if conn != nil {
				conn.Close(context.Background())
			}
		}()
		// On a schedule, catching up after a slow write, but not after
		// more than a second behind (the restart).
		const period = time.Second / writesPerSec
		next := time.Now()
		for id := int64(1); ; id++ {
			next = next.Add(period)
			if behind := time.Since(next); behind > time.Second {
				next = time.Now()
			}
			select {
			case <-stopWrites:
				return
			case <-time.After(time.Until(next)):
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			var err error
			if conn == nil {
				conn, err = pgx.Connect(ctx, url)
			}
			if err == nil {
				_, err = conn.Exec(ctx, `INSERT INTO soak VALUES ($1, $2, $3)`, id, id%rooms, fmt.Sprintf("row %d", id))
				if err != nil {
					conn.Close(ctx)
					conn = nil
				}
			}
			cancel()
			wmu.Lock()
			if err == nil {
				commitAt[id] = time.Now()
			} else {
				failed++
			}
			wmu.Unlock()
		}
	}()

	// Chat: one message a second in a random room, sent by a member.
	var chatSent atomic.Int64
	stopChat := make(chan struct{})
	chatDone := make(chan struct{})
	go func() {
		defer close(chatDone)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopChat:
				return
			case <-tick.C:
			}
			c := clients[rand.N(len(clients))]
			if c.send("chat", "send", map[string]any{"channel": fmt.Sprintf("room-%d", c.room), "body": "hello"}) {
				chatSent.Add(1)
			}
		}
	}()

	// Reconnects: 5% of the clients a minute, spread evenly; one
	// PostgreSQL restart half-way.
	every := time.Minute / time.Duration(max(nClients*5/100, 1))
	var (
		reconnects, resumeFailures int
		pgDown, pgUp, pgReady      time.Time
		rssWarm, fdWarm            int64
		rssMax                     int64
		liveWarm                   int64
	)
	watch := watchReady(p)
	defer watch.close()
	began := time.Now()
	nextReconnect := began.Add(every)
	restartAt := began.Add(duration / 2)
	warmDone := false
	// A sample a minute (RSS, the Go heap in use, idle heap the runtime
	// keeps, goroutine stacks, goroutines), to tell a plateau from a leak.
	var series []string
	nextSample := began
	for time.Since(began) < duration {
		time.Sleep(100 * time.Millisecond)
		now := time.Now()
		if rss, _ := p.rss(); rss > rssMax {
			rssMax = rss
		}
		if now.After(nextSample) {
			nextSample = nextSample.Add(time.Minute)
			rss, _ := p.rss()
			heap, _ := p.metric("go_memstats_heap_inuse_bytes")
			idle, _ := p.metric("go_memstats_heap_idle_bytes")
			released, _ := p.metric("go_memstats_heap_released_bytes")
			stacks, _ := p.metric("go_memstats_stack_inuse_bytes")
			g, _ := p.metric("go_goroutines")
			series = append(series, fmt.Sprintf("%v: %.1f/%.1f/%.1f/%.1f/%v", now.Sub(began).Round(time.Second),
				mib(rss), heap/(1<<20), (idle-released)/(1<<20), stacks/(1<<20), g))
		}
		if !warmDone && now.Sub(began) >= warmup {
			warmDone = true
			rssWarm, _ = p.rss()
			fdWarm = p.openFiles()
			liveWarm = liveHeap(t, p)
			saveHeapProfile(t, p, profiles, "heap-warm.pb.gz")
		}
		if pgDown.IsZero() && now.After(restartAt) {
			pgDown = now
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			if err := pg.Restart(ctx, pglocal.Fast); err != nil {
				t.Fatalf("restarting PostgreSQL: %v", err)
			}
			cancel()
			pgUp = time.Now()
		}
		if !pgUp.IsZero() && pgReady.IsZero() {
			if _, up, ok := watch.readyAgainAfter(pgDown); ok {
				pgReady = up
			}
		}
		if now.After(nextReconnect) {
			nextReconnect = nextReconnect.Add(every)
			c := clients[rand.N(len(clients))]
			reconnects++
			if !c.reconnect() {
				resumeFailures++
			}
		}
	}
	close(stopWrites)
	<-writerDone
	close(stopChat)
	<-chatDone
	rssEnd, _ := p.rss()
	fdEnd := p.openFiles()
	saveHeapProfile(t, p, profiles, "heap-end.pb.gz")
	cpu := p.cpuTime() - cpu0
	wall := time.Since(t0)

	// The checker: every client ends with every committed row of its room,
	// once, in commit order.
	db := dbConnect(t, url)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := db.Query(ctx, `SELECT id, room FROM soak ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	byRoom := make([][]int64, rooms)
	total := 0
	for rows.Next() {
		var id int64
		var room int
		if err := rows.Scan(&id, &room); err != nil {
			t.Fatal(err)
		}
		byRoom[room] = append(byRoom[room], id)
		total++
	}
	if rows.Err() != nil {
		t.Fatal(rows.Err())
	}
	waitFor(t, 2*time.Minute, "every client holding every row of its room", func() bool {
		for _, c := range clients {
			if c.distinct() < len(byRoom[c.room]) {
				return false
			}
		}
		return true
	})
	// The live heap once every client has caught up: nothing is still
	// queued for a client that a loaded machine made lag.
	liveEnd := liveHeap(t, p)
	var (
		delivered, dups, lost int
		lat                   []time.Duration
		chatGot               int64
	)
	wmu.Lock()
	for _, c := range clients {
		c.mu.Lock()
		seen := c.seen
		dups += c.dups
		var order []int64
		for _, d := range c.deltas {
			order = append(order, d.id)
			at, ok := commitAt[d.id]
			if ok && !c.inWindow(d.at) && !(d.at.After(pgDown) && d.at.Before(pgReady.Add(10*time.Second))) {
				lat = append(lat, d.at.Sub(at))
			}
		}
		chatGot += c.chats
		c.mu.Unlock()
		delivered += len(order)
		if !slices.IsSorted(order) {
			t.Errorf("client %d: rows out of commit order", c.n)
		}
		for _, id := range byRoom[c.room] {
			if !seen[id] {
				if lost < 10 {
					t.Errorf("client %d (room %d): committed row %d never delivered", c.n, c.room, id)
				}
				lost++
			}
		}
		if len(order) != len(byRoom[c.room]) {
			t.Errorf("client %d: %d distinct rows delivered, want the room's %d", c.n, len(order), len(byRoom[c.room]))
		}
	}
	wmu.Unlock()
	slices.Sort(lat)
	pct := func(q float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(q*float64(len(lat))))].Round(100 * time.Microsecond)
	}

	// The clients leave: goroutines and open files return to their levels
	// before the clients came.
	for _, c := range clients {
		c.close()
	}
	var afterG float64
	var afterFD int64
	waitFor(t, 2*time.Minute, fmt.Sprintf("goroutines back to %v ± 5 and open files to %d ± 10 after the clients left", baseG, baseFD), func() bool {
		afterG, _ = p.metric("go_goroutines")
		afterFD = p.openFiles()
		return afterG >= baseG-5 && afterG <= baseG+5 && afterFD >= baseFD-10 && afterFD <= baseFD+10
	})
	growth := float64(rssEnd-rssWarm) / float64(rssWarm)

	figure(t, "T20: %v, %d clients in %d rooms, %d rows committed (%.0f/s), %d INSERTs failed during the PostgreSQL restart",
		duration, nClients, rooms, total, float64(total)/duration.Seconds(), failed)
	figure(t, "T20: %d deltas delivered, %d lost, %d duplicates; %d reconnects with resume (%d failed); %d chat messages sent, %d chat deliveries",
		delivered, lost, dups, reconnects, resumeFailures, chatSent.Load(), chatGot)
	figure(t, "T20: PostgreSQL restart (fast) took %v; the server streamed again %v after it accepted connections",
		pgUp.Sub(pgDown).Round(time.Millisecond), pgReady.Sub(pgUp).Round(time.Millisecond))
	figure(t, "T20: commit → client latency outside the reconnect windows (%d samples): p50 %v, p99 %v, max %v",
		len(lat), pct(0.50), pct(0.99), pct(1))
	figure(t, "T20: server RSS %.1f MiB after warm-up (%v), %.1f MiB at the end (growth %.1f%%), peak %.1f MiB; CPU %.0f%% of one core on average",
		mib(rssWarm), warmup, mib(rssEnd), 100*growth, mib(rssMax), 100*float64(cpu)/float64(wall))
	figure(t, "T20: live heap right after a forced collection %.1f MiB after warm-up, %.1f MiB at the end", mib(liveWarm), mib(liveEnd))
	figure(t, "T20: each minute, RSS / Go heap in use / heap idle, not returned to the OS / goroutine stacks (MiB) / goroutines: %s", strings.Join(series, ", "))
	figure(t, "T20: goroutines %v before the clients, %v with them, %v after they left; open files %d before, %d after warm-up, %d at the end, %d after they left",
		baseG, withClientsG, afterG, baseFD, fdWarm, fdEnd, afterFD)
	if want := int(duration.Seconds() * writesPerSec / 4); total < want {
		t.Errorf("%d rows committed, want at least %d (a quarter of the target rate)", total, want)
	}
	if chatGot == 0 {
		t.Errorf("no chat message delivered")
	}
	if resumeFailures > 0 {
		t.Errorf("%d of %d resumes failed, want 0", resumeFailures, reconnects)
	}
	if pgReady.IsZero() {
		t.Errorf("the server never reported itself streaming again after the PostgreSQL restart")
	}
	// Generous bounds: a real leak grows without limit; these hold on a
	// loaded machine.
	if growth > 0.5 {
		t.Errorf("RSS grew %.1f%% after warm-up (%.1f → %.1f MiB), want < 10%% (asserted < 50%%)", 100*growth, mib(rssWarm), mib(rssEnd))
	}
	// RSS keeps settling for minutes (the runtime's working set), so a CI-length
	// run tells a leak by the live heap: what a collection cannot free.
	if liveWarm > 0 && liveEnd > liveWarm*3/2+4<<20 {
		t.Errorf("live heap after a collection grew from %.1f to %.1f MiB after warm-up, want at most 1.5× + 4 MiB: objects leak", mib(liveWarm), mib(liveEnd))
	}
	if d := fdEnd - fdWarm; d > 20 || d < -20 {
		t.Errorf("open files: %d after warm-up, %d at the end, want stable ± 10 (asserted ± 20)", fdWarm, fdEnd)
	}
}

// saveHeapProfile saves the server's heap profile, after a collection, as
// dir/name; nothing when dir is "".
func saveHeapProfile(t *testing.T, p *proc, dir, name string) {
	if dir == "" {
		return
	}
	resp, err := http.Get("http://" + p.back + "/debug/pprof/heap?gc=1")
	if err != nil {
		t.Errorf("heap profile: %v", err)
		return
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, b)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name), b, 0o644)
	}
	if err != nil {
		t.Errorf("heap profile: %v", err)
		return
	}
	t.Logf("heap profile saved: %s", filepath.Join(dir, name))
}

// liveHeap forces a collection in the server and returns the heap it
// could not free (runtime.MemStats.HeapAlloc right after it, from the text
// form of the heap profile); 0 with a test error if it cannot be read.
func liveHeap(t *testing.T, p *proc) int64 {
	t.Helper()
	resp, err := http.Get("http://" + p.back + "/debug/pprof/heap?gc=1&debug=1")
	if err != nil {
		t.Errorf("live heap: %v", err)
		return 0
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %.200s", resp.Status, b)
	}
	if err != nil {
		t.Errorf("live heap: %v", err)
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "# HeapAlloc = "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				t.Errorf("live heap: %q: %v", line, err)
				return 0
			}
			return n
		}
	}
	t.Errorf("live heap: no HeapAlloc line in the heap profile")
	return 0
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// startSoakServer is startPlainServer (memory is measured) with no cap on
// connections per IP (every client is 127.0.0.1).
func startSoakServer(t *testing.T, pprof bool, c serverConfig) *proc {
	t.Helper()
	bin, err := plainBin()
	if err != nil {
		t.Fatal(err)
	}
	path, front, back := writeConfig(t, c)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	yaml := strings.Replace(string(b), "limits: {", "limits: {connections_per_ip: 0, ", 1)
	if pprof {
		yaml = strings.Replace(yaml, "backend: {", "backend: {pprof: true, ", 1)
	}
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return startProcBin(t, bin, path, front, back)
}

// openFiles counts the server's open file descriptors.
func (p *proc) openFiles() int64 {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid))
	if err != nil {
		return -1
	}
	return int64(len(ents))
}

// mustIdentity returns an identity token for id (identity_backend).
func (p *proc) mustIdentity(id string) string {
	p.t.Helper()
	data, rpcErr, err := p.backend("identity_backend", "authorizeIdentity", map[string]any{"identity": id})
	if err != nil || rpcErr != "" {
		p.t.Fatalf("authorizeIdentity: %v %s", err, rpcErr)
	}
	var tok string
	if err := json.Unmarshal(data, &tok); err != nil {
		p.t.Fatalf("identity token %s: %v", data, err)
	}
	return tok
}

// soakClient is one soak client: a connection at a time, its resume
// state, and what it received over all its connections.
type soakClient struct {
	t        testing.TB
	p        *proc
	n, room  int
	identity string

	writeMu sync.Mutex // one writer; held across dial
	ws      *websocket.Conn
	readers sync.WaitGroup

	mu      sync.Mutex
	res     resumable
	offset  string      // the greatest offset seen
	deltas  []soakDelta // the first receipt of each row
	seen    map[int64]bool
	dups    int
	chats   int64
	windows []time.Time // when each reconnect began
	nextID  int
	replies map[int]chan reply
}

type soakDelta struct {
	id int64
	at time.Time
}

// inWindow reports whether at is in a reconnect window of c (from the
// reconnect to 5 s after). c.mu is held.
func (c *soakClient) inWindow(at time.Time) bool {
	for _, w := range c.windows {
		if !at.Before(w) && at.Before(w.Add(5*time.Second)) {
			return true
		}
	}
	return false
}

func (c *soakClient) distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.deltas)
}

// connect dials with the identity token and joins the room's chat.
func (c *soakClient) connect() bool {
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second}
	ws, _, err := d.Dial("ws://"+c.p.front+"/ws?token="+c.identity, nil)
	if err != nil {
		c.t.Errorf("client %d: dialing: %v", c.n, err)
		return false
	}
	c.writeMu.Lock()
	c.ws = ws
	c.writeMu.Unlock()
	c.mu.Lock()
	c.replies = map[int]chan reply{}
	c.mu.Unlock()
	c.readers.Add(1)
	go c.read(ws)
	r := c.call("chat", "join", map[string]any{"channel": fmt.Sprintf("room-%d", c.room)})
	if r.Type != "response" {
		c.t.Errorf("client %d: chat join: %s %q", c.n, r.Type, r.Message)
		return false
	}
	return true
}

// reconnect drops the connection without a close handshake, dials anew,
// rejoins the chat and resumes the subscription from the greatest offset
// seen. It reports whether the resume succeeded.
func (c *soakClient) reconnect() bool {
	c.mu.Lock()
	c.windows = append(c.windows, time.Now())
	c.mu.Unlock()
	c.writeMu.Lock()
	c.ws.NetConn().Close()
	c.writeMu.Unlock()
	c.readers.Wait()
	if !c.connect() {
		return false
	}
	c.mu.Lock()
	res, from := c.res, c.offset
	c.mu.Unlock()
	if from == "" || from < res.Offset {
		from = res.Offset
	}
	r := c.call("datasync", "resumeSubscription", map[string]any{"resume": res.Resume, "epoch": res.Epoch, "offset": from})
	if r.Type != "response" {
		c.t.Errorf("client %d: resumeSubscription from %s: %s %q", c.n, from, r.Type, r.Message)
		return false
	}
	var out resumable
	if err := json.Unmarshal(r.Data, &out); err != nil {
		c.t.Errorf("client %d: resume result %s: %v", c.n, r.Data, err)
		return false
	}
	c.mu.Lock()
	c.res = out
	c.mu.Unlock()
	return true
}

func (c *soakClient) close() {
	c.writeMu.Lock()
	if c.ws != nil {
		c.ws.Close()
	}
	c.writeMu.Unlock()
	c.readers.Wait()
}

func (c *soakClient) read(ws *websocket.Conn) {
	defer c.readers.Done()
	defer ws.Close()
	for {
		_, msg, err := ws.ReadMessage()
		if err != nil {
			c.mu.Lock()
			for id, ch := range c.replies {
				close(ch)
				delete(c.replies, id)
			}
			c.mu.Unlock()
			return
		}
		now := time.Now()
		var env struct {
			Service string `json:"service"`
			Message struct {
				reply
				Delta *struct {
					Type   string `json:"type"`
					Offset string `json:"offset"`
					Data   struct {
						ID int64 `json:"id"`
					} `json:"data"`
				} `json:"delta"`
				Epoch  string `json:"epoch"`
				Offset string `json:"offset"`
			} `json:"message"`
		}
		if err := json.Unmarshal(msg, &env); err != nil {
			c.t.Errorf("client %d: invalid JSON %q: %v", c.n, msg, err)
			continue
		}
		m := env.Message
		c.mu.Lock()
		switch {
		case m.Type == "delta" && m.Delta != nil:
			if m.Delta.Type == "insert" {
				if c.seen[m.Delta.Data.ID] {
					c.dups++
				} else {
					c.seen[m.Delta.Data.ID] = true
					c.deltas = append(c.deltas, soakDelta{id: m.Delta.Data.ID, at: now})
				}
			}
			c.offset = max(c.offset, m.Delta.Offset)
		case m.Type == "position" && m.Epoch == c.res.Epoch:
			c.offset = max(c.offset, m.Offset)
		case env.Service == "chat" && m.Type == "message":
			c.chats++
		case m.Type == "response" || m.Type == "error":
			if ch := c.replies[m.CallID]; ch != nil {
				delete(c.replies, m.CallID)
				ch <- m.reply
			}
		}
		c.mu.Unlock()
	}
}

// call sends a request and waits (60 s) for its reply; a zero reply if
// the connection ended first.
func (c *soakClient) call(service, command string, params any) reply {
	c.mu.Lock()
	c.nextID++
	id := c.nextID
	ch := make(chan reply, 1)
	c.replies[id] = ch
	c.mu.Unlock()
	msg, _ := json.Marshal(map[string]any{"service": service, "message": map[string]any{"command": command, "params": params, "callId": id}})
	c.writeMu.Lock()
	c.ws.SetWriteDeadline(time.Now().Add(30 * time.Second))
	err := c.ws.WriteMessage(websocket.TextMessage, msg)
	c.writeMu.Unlock()
	if err != nil {
		return reply{Message: err.Error()}
	}
	select {
	case r := <-ch:
		return r
	case <-time.After(60 * time.Second):
		return reply{Message: "no reply within 60s"}
	}
}

// send is call for fire-and-forget traffic (chat): it reports whether the
// server answered with a response.
func (c *soakClient) send(service, command string, params any) bool {
	c.mu.Lock()
	ok := c.replies != nil
	c.mu.Unlock()
	return ok && c.call(service, command, params).Type == "response"
}
