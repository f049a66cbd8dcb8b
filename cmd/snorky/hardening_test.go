package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snorkyhq/snorky/cmd/snorky/internal/config"
)

// TestStartupRefusesWeakSecrets: an empty, short, whitespace-only or
// low-variety API key or token secret stops the server before it listens,
// with an error naming the key and saying how to generate one, and never
// quoting the value.
func TestStartupRefusesWeakSecrets(t *testing.T) {
	const goodKey, goodSecret = "Zm9vYmFyYmF6cXV4MTIzNDU2Nzg5MGFiY2RlZmdoaWo=", "c2VjcmV0LXJhbmRvbS1hYmNkZWZnaGlqa2xtbm9wcXJzdA=="
	for _, tc := range []struct {
		name, key, secret, env, want, detail string
	}{
		{"empty key", "", goodSecret, "", "backend.api_key", "must be set"},
		{"one-character key", "k", goodSecret, "", "backend.api_key", "too short (1 bytes)"},
		{"31-byte key", "0123456789abcdefghijklmnopqrstu", goodSecret, "", "backend.api_key", "too short (31 bytes)"},
		{"key of one character repeated", strings.Repeat("a", 40), goodSecret, "", "backend.api_key", "too little variety"},
		{"key from the environment", goodKey, goodSecret, "SNORKY_BACKEND__API_KEY=short-key", "backend.api_key", "too short"},
		{"empty secret", goodKey, "", "", "tokens.secret", "must be set"},
		{"16-space secret", goodKey, strings.Repeat(" ", 16), "", "tokens.secret", "too short"},
		{"40-space secret", goodKey, strings.Repeat(" ", 40), "", "tokens.secret", "only whitespace"},
		{"two-character secret", goodKey, strings.Repeat("ab", 20), "", "tokens.secret", "too little variety"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "snorky.yaml")
			writeFile(t, path, fmt.Sprintf("backend: {listen: \"127.0.0.1:0\", api_key: %q}\ntokens: {secret: %q}\nfrontend: {listen: \"127.0.0.1:0\"}\n", tc.key, tc.secret))
			var env []string
			if tc.env != "" {
				env = []string{tc.env}
			}
			ready := false
			err := serve(t.Context(), path, env, io.Discard, func(*server) { ready = true })
			if err == nil || ready {
				t.Fatalf("serve started (err %v)", err)
			}
			msg := err.Error()
			for _, want := range []string{tc.want, tc.detail, "openssl rand -base64 32"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not say %q", msg, want)
				}
			}
			for _, v := range []string{tc.key, tc.secret} {
				if len(strings.TrimSpace(v)) > 3 && strings.Contains(msg, v) {
					t.Errorf("error %q quotes the value", msg)
				}
			}
		})
	}
	// The command exits non-zero: run returns the error.
	path := filepath.Join(t.TempDir(), "snorky.yaml")
	writeFile(t, path, "backend: {api_key: k}\ntokens: {secret: \""+goodSecret+"\"}\n")
	var stderr bytes.Buffer
	if err := run(t.Context(), []string{"serve", "--config", path}, io.Discard, &stderr); err == nil {
		t.Fatal("snorky serve with a 1-byte key: got no error")
	}
}

// TestCheckWarnsAboutExposure: `snorky check` (and `serve`, in its log)
// warns when the backend listener is reachable from other hosts without
// TLS, and when /metrics is open there.
func TestCheckWarnsAboutExposure(t *testing.T) {
	for _, tc := range []struct {
		name, backend string
		want          []string
	}{
		{"loopback", `listen: "127.0.0.1:5002"`, nil},
		{"every interface", `listen: ":5002"`, []string{`backend.listen: ":5002" is reachable from other hosts without TLS`, "backend.listen: /metrics requires the API key (backend.metrics_auth), but without TLS"}},
		{"public, metrics open", `listen: "0.0.0.0:5002", metrics_auth: false`, []string{`backend.listen: "0.0.0.0:5002" is reachable`, "backend.metrics_auth: false while the backend is reachable from other hosts"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "snorky.yaml")
			writeFile(t, path, fmt.Sprintf("backend: {api_key: %q, %s}\ntokens: {secret: %q}\n", testKey, tc.backend, testSecret))
			var out bytes.Buffer
			if err := check(t.Context(), path, nil, &out); err != nil {
				t.Fatalf("check: %v", err)
			}
			warnings := strings.Count(out.String(), "warning:")
			if warnings != len(tc.want) {
				t.Errorf("got %d warnings, want %d:\n%s", warnings, len(tc.want), out.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), "warning: "+w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if strings.Contains(out.String(), testKey) {
				t.Error("check printed the API key")
			}
		})
	}
}

// TestMetricsAuth: with backend.metrics_auth, /metrics needs the API key
// (X-Backend-Key or a Bearer token); by default it does not on loopback,
// and does elsewhere.
func TestMetricsAuth(t *testing.T) {
	s := startServer(t, `backend: {listen: "127.0.0.1:0", path: /backend, api_key: "`+testKey+`", metrics_auth: true}`)
	get := func(hdr map[string]string) int {
		req, _ := http.NewRequest("GET", "http://"+s.backLn.Addr().String()+"/metrics", nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name string
		hdr  map[string]string
		want int
	}{
		{"no key", nil, 401},
		{"wrong key", map[string]string{"X-Backend-Key": "nope"}, 401},
		{"X-Backend-Key", map[string]string{"X-Backend-Key": testKey}, 200},
		{"Bearer", map[string]string{"Authorization": "Bearer " + testKey}, 200},
		{"wrong Bearer", map[string]string{"Authorization": "Bearer " + testKey + "x"}, 401},
	} {
		if got := get(tc.hdr); got != tc.want {
			t.Errorf("%s: got HTTP %d, want %d", tc.name, got, tc.want)
		}
	}
	for _, tc := range []struct {
		listen string
		set    *bool
		want   bool
	}{
		{"127.0.0.1:5002", nil, false},
		{"[::1]:5002", nil, false},
		{"localhost:5002", nil, false},
		{":5002", nil, true},
		{"10.0.0.5:5002", nil, true},
		{"10.0.0.5:5002", new(bool), false},
	} {
		c := &config.Config{Backend: config.BackendConfig{Listen: tc.listen, MetricsAuth: tc.set}}
		if got := c.MetricsAuth(); got != tc.want {
			t.Errorf("metricsAuth(listen %s, set %v): got %v, want %v", tc.listen, tc.set, got, tc.want)
		}
	}
}

// TestHTTPTimeouts (T16): 1,000 idle keep-alive sockets on the frontend
// port are closed by http_idle_timeout; a backend body trickled at 1 byte/s
// (with a valid key) is cut at http_read_timeout; headers trickled are cut
// at http_read_header_timeout.
func TestHTTPTimeouts(t *testing.T) {
	// The header timeout leaves room for a starved CPU: the server may be
	// slow to read the 1,000 sockets' first requests, and a request it
	// times out is reset.
	const idle, body, header = 1 * time.Second, 1500 * time.Millisecond, 5 * time.Second
	s := startServer(t, fmt.Sprintf(`limits: {commands_per_second: 0, http_idle_timeout: %s, http_read_timeout: %s, http_read_header_timeout: %s}`, idle, body, header))
	front := s.frontLn.Addr().String()

	const n = 1000
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, n)
	closedAt := make(chan time.Duration, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", front)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			fmt.Fprintf(c, "GET /ws-%d HTTP/1.1\r\nHost: x\r\n\r\n", i)
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				errs <- err
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			// Keep-alive: now idle. The server must close it.
			idleSince := time.Now()
			// A read timeout (not EOF) means the server kept it open.
			c.SetReadDeadline(time.Now().Add(idle + 30*time.Second))
			if _, err := br.ReadByte(); err != io.EOF {
				errs <- fmt.Errorf("idle keep-alive socket: got %v, want EOF", err)
				return
			}
			closedAt <- time.Since(idleSince)
		}()
	}
	wg.Wait()
	close(errs)
	close(closedAt)
	for err := range errs {
		t.Fatal(err)
	}
	var longest time.Duration
	count := 0
	for d := range closedAt {
		longest = max(longest, d)
		count++
	}
	if count != n {
		t.Fatalf("%d of %d idle sockets closed, the last after %v idle; want all, by http_idle_timeout (%v)", count, n, longest, idle)
	}
	t.Logf("%d idle keep-alive sockets closed by the server, each after at most %v idle (http_idle_timeout %v; all %d opened and closed within %v)", n, longest.Round(time.Millisecond), idle, n, time.Since(start).Round(time.Millisecond))

	trickle := func(what, head string, rest []byte, limit time.Duration) {
		c, err := net.Dial("tcp", s.backLn.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		begin := time.Now()
		io.WriteString(c, head)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for _, b := range rest {
				if _, err := c.Write([]byte{b}); err != nil {
					return
				}
				time.Sleep(time.Second)
			}
		}()
		// The trickle would take len(rest) seconds; the server must cut it
		// first. Our own read deadline expiring means it did not: that is
		// the failure, whatever the machine's speed.
		c.SetReadDeadline(time.Now().Add(limit + 30*time.Second))
		_, err = io.Copy(io.Discard, c) // the reply, if any, then EOF
		took := time.Since(begin)
		c.Close()
		<-done
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Errorf("%s: still open %v later, want cut at about %v", what, took.Round(time.Millisecond), limit)
		}
		t.Logf("%s: cut after %v (limit %v)", what, took.Round(time.Millisecond), limit)
	}
	payload := `{"service":"pubsub_backend","message":{"command":"publish","params":{"channel":"c","message":1}}}`
	trickle("body at 1 byte/s", fmt.Sprintf("POST /backend HTTP/1.1\r\nHost: x\r\nX-Backend-Key: %s\r\nContent-Length: %d\r\n\r\n", testKey, len(payload)), []byte(payload), body)
	trickle("headers at 1 byte/s", "POST /backend HTTP/1.1\r\n", []byte("X-Backend-Key: "+testKey+"\r\n\r\n"), header)
}

// logBuffer collects a server's log for inspection.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startServerLog is startServer with the log written to w (at debug level)
// instead of the test log.
func startServerLog(t testing.TB, extra string, w io.Writer) *server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "snorky.yaml")
	writeFile(t, path, mergeYAML(baseConfig, extra+"\nlog: {level: debug}"))
	ctx, cancel := context.WithCancel(context.Background())
	readyc := make(chan *server, 1)
	errc := make(chan error, 1)
	go func() { errc <- serve(ctx, path, nil, w, func(s *server) { readyc <- s }) }()
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
	}
	return nil
}
