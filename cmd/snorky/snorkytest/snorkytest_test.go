package snorkytest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeServer writes a script that stands in for the snorky binary: it
// prints its arguments and waits to be signalled.
func fakeServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "snorky")
	script := "#!/bin/sh\necho \"args: $*\"\necho \"env: $SNORKYTEST_MARK\"\nexec sleep 600\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

func TestStartStop(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	p, err := Start(Options{Bin: fakeServer(t), Config: "/etc/snorky.yaml", FrontendAddr: "127.0.0.1:1", BackendAddr: "127.0.0.1:2",
		Env: append(os.Environ(), "SNORKYTEST_MARK=here")})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(p.Log(), "env: here") {
		if time.Now().After(deadline) {
			t.Fatalf("log: got %q, want the script's output", p.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got, want := p.Log(), "args: serve --config /etc/snorky.yaml\n"; !strings.HasPrefix(got, want) {
		t.Errorf("log: got %q, want it to start with %q", got, want)
	}
	if p.Exited() {
		t.Fatal("exited before Stop")
	}
	for _, tc := range []struct{ got, want string }{
		{p.FrontendURL(), "ws://127.0.0.1:1/ws"},
		{p.BackendURL(), "http://127.0.0.1:2/backend"},
		{p.ReadyURL(), "http://127.0.0.1:2/readyz"},
		{p.MetricsURL(), "http://127.0.0.1:2/metrics"},
	} {
		if tc.got != tc.want {
			t.Errorf("URL: got %s, want %s", tc.got, tc.want)
		}
	}
	if err := p.Stop(time.Minute); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if !p.Exited() {
		t.Fatal("not exited after Stop")
	}
	var ee interface{ Sys() any }
	if err := p.Err(); !errors.As(err, &ee) {
		t.Fatalf("Err: got %v, want the exit of a signalled process", err)
	}
	if ws, ok := ee.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGTERM {
		t.Errorf("exit: got %v, want killed by SIGTERM", p.Err())
	}
	if err := p.Stop(time.Minute); err != nil {
		t.Errorf("Stop of an exited server: got %v, want nil", err)
	}
	q, err := p.Restart()
	if err != nil {
		t.Fatal(err)
	}
	if err := q.Kill(); err != nil {
		t.Fatal(err)
	}
	if !q.Exited() {
		t.Fatal("not exited after Kill")
	}
}

func TestStartMissingBinary(t *testing.T) {
	if _, err := Start(Options{Bin: filepath.Join(t.TempDir(), "nope"), Config: "x"}); err == nil {
		t.Fatal("Start of a missing binary: got no error")
	}
}

func TestWaitReady(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	if err := WaitReady(context.Background(), srv.URL, time.Minute, nil); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}
	if n := calls.Load(); n != 3 {
		t.Errorf("polls: got %d, want 3 (two 503s, then 200)", n)
	}

	exited := make(chan struct{})
	close(exited)
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer down.Close()
	if err := WaitReady(context.Background(), down.URL, time.Minute, exited); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("WaitReady of an exited server: got %v, want an error saying it exited", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WaitReady(ctx, down.URL, time.Minute, nil); err == nil {
		t.Error("WaitReady with a cancelled context: got no error")
	}
}

func TestHelpers(t *testing.T) {
	if got := Tail("abcdef", 3); got != "…def" {
		t.Errorf("Tail: got %q, want %q", got, "…def")
	}
	if got := Tail("ab", 3); got != "ab" {
		t.Errorf("Tail of a short string: got %q, want %q", got, "ab")
	}
	env := WithoutSnorkyEnv([]string{"PATH=/bin", "SNORKY_BACKEND__API_KEY=k", "HOME=/root", "SNORKY_BENCH_E2E=1"})
	if got := strings.Join(env, " "); got != "PATH=/bin HOME=/root" {
		t.Errorf("WithoutSnorkyEnv: got %q", got)
	}
	addr, err := FreeAddr()
	if err != nil || !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("FreeAddr: got %q, %v", addr, err)
	}
	var b Buffer
	b.Write([]byte("x"))
	b.Write([]byte("y"))
	if b.String() != "xy" {
		t.Errorf("Buffer: got %q, want %q", b.String(), "xy")
	}
}
