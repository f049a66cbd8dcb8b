package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/cmd/snorky/snorkytest"
)

// openWebSockets reads snorky_ws_connections from a node's /metrics.
func openWebSockets(t *testing.T, back string) int {
	resp, err := http.Get("http://" + back + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^snorky_ws_connections(?:\{[^}]*\})? (\d+)`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no snorky_ws_connections in %s/metrics", back)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// TestDemoNodes runs `snorky demo --nodes 3` and plays a browser whose
// node is killed: it subscribes through the page, the node that holds its
// WebSocket is killed with SIGKILL, it reconnects through the page (to
// another node) and resumes, and it gets every change once.
func TestDemoNodes(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "snorky")
	if err := snorkytest.Build(context.Background(), bin, false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan demoInfo, 1)
	errc := make(chan error, 1)
	logw := &testLogWriter{t: t}
	go func() {
		errc <- runDemo(ctx, demoOptions{Addr: "127.0.0.1:0", Nodes: 3, ServeBin: bin, Ready: func(i demoInfo) { readyc <- i }}, logw, logw)
	}()
	var info demoInfo
	select {
	case info = <-readyc:
	case err := <-errc:
		cancel()
		t.Fatalf("demo: %v", err)
	case <-time.After(3 * time.Minute):
		cancel()
		t.Fatal("the demo did not start within 3 minutes")
	}
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("demo: %v", err)
		}
	}()
	defer http2Idle()
	if len(info.Nodes) != 3 {
		t.Fatalf("%d nodes, want 3", len(info.Nodes))
	}
	wsURL := "ws" + strings.TrimPrefix(info.PageURL, "http") + "/ws"
	origin := http.Header{"Origin": {info.PageURL}}

	resp, body := httpDo(t, "GET", info.PageURL+"/api/tasks", "", http.Header{"X-Snorky": {"Subscribe"}})
	token := resp.Header.Get("X-Subscription-Token")
	if resp.StatusCode != 200 || token == "" {
		t.Fatalf("GET /api/tasks: got %d %q with token %q", resp.StatusCode, body, token)
	}
	c := dialURL(t, wsURL, origin)
	res := c.ok("datasync", "acquireSubscription", map[string]any{"token": token, "resumable": true}).(map[string]any)

	db, err := pgx.Connect(context.Background(), info.DatabaseURL)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(context.Background())
	insert := func(title string) {
		t.Helper()
		if _, err := db.Exec(context.Background(), `INSERT INTO tasks (title) VALUES ($1)`, title); err != nil {
			t.Fatal(err)
		}
	}
	var titles []string
	lastOffset := res["offset"].(string)
	receive := func(c *wsClient, n int) {
		t.Helper()
		for got := 0; got < n; {
			m := c.next()
			msg := m["message"].(map[string]any)
			if msg["type"] == "position" {
				continue
			}
			if m["service"] != "datasync" || msg["type"] != "delta" {
				t.Fatalf("got %v, want a delta", m)
			}
			got++
			d := msg["delta"].(map[string]any)
			data := d["data"].(map[string]any)
			titles = append(titles, data["title"].(string))
			lastOffset = d["offset"].(string)
		}
	}
	for i := range 3 {
		insert(fmt.Sprintf("before %d", i))
	}
	receive(c, 3)

	// Kill the node that holds the WebSocket.
	victim := -1
	for i, n := range info.Nodes {
		if openWebSockets(t, n.Backend) > 0 {
			victim = i
		}
	}
	if victim < 0 {
		t.Fatal("no node reports the page's WebSocket")
	}
	if err := syscall.Kill(info.Nodes[victim].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.done:
	case <-time.After(30 * time.Second):
		t.Fatal("the killed node's WebSocket did not end")
	}
	// Changes made while the browser is away.
	for i := range 3 {
		insert(fmt.Sprintf("away %d", i))
	}
	// The browser reconnects through the page: another node answers.
	var c2 *wsClient
	deadline := time.Now().Add(60 * time.Second)
	for {
		c2 = dialURL(t, wsURL, origin)
		m := c2.rpc("datasync", "resumeSubscription", map[string]any{"resume": res["resume"], "epoch": res["epoch"], "offset": lastOffset})
		if m["type"] == "response" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("resume after the kill: %v", m)
		}
		time.Sleep(200 * time.Millisecond)
	}
	receive(c2, 3)
	insert("after")
	receive(c2, 1)
	want := "before 0,before 1,before 2,away 0,away 1,away 2,after"
	if got := strings.Join(titles, ","); got != want {
		t.Fatalf("titles received %s, want %s (each once, in order)", got, want)
	}
	settle := time.After(300 * time.Millisecond)
	for {
		select {
		case m := <-c2.msgs:
			if !strings.Contains(string(m), `"type":"position"`) {
				t.Fatalf("an extra message after the last change: %s", m)
			}
			continue
		case <-settle:
		}
		break
	}
}
