package cdc

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"
)

// silentServer accepts TCP connections and never answers, as a
// blackholed network or a hung server does.
func silentServer(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// Connecting to a server that never answers gives up after the dead-link
// timeout instead of hanging (the caller's context has no deadline).
func TestConnectBoundedByDeadLinkTimeout(t *testing.T) {
	addr := silentServer(t)
	cfg := Config{URL: fmt.Sprintf("postgres://snorky@%s/app?sslmode=disable", addr), StatusInterval: 100 * time.Millisecond, ReceiveTimeout: 300 * time.Millisecond}
	for name, connect := range map[string]func(context.Context) error{
		"replication": func(ctx context.Context) error {
			c, err := connectReplication(ctx, cfg)
			if err == nil {
				c.Close(ctx)
			}
			return err
		},
		"sql": func(ctx context.Context) error {
			c, err := connectSQL(ctx, cfg)
			if err == nil {
				c.Close(ctx)
			}
			return err
		},
	} {
		t.Run(name, func(t *testing.T) {
			// The test's own bound, far above the timeout: reaching it
			// means connecting was not bounded.
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err := connect(ctx)
			if err == nil {
				t.Fatal("connected to a server that never answers")
			}
			if ctx.Err() != nil {
				t.Fatalf("connecting was not bounded by the dead-link timeout: %v", err)
			}
		})
	}
}

// A URL's own connect_timeout wins over the dead-link timeout.
func TestBoundLinkKeepsURLConnectTimeout(t *testing.T) {
	cfg := Config{URL: "postgres://snorky@127.0.0.1:5432/app?connect_timeout=7", ReceiveTimeout: 30 * time.Second}
	pc, err := connConfig(cfg, true)
	if err != nil {
		t.Fatal(err)
	}
	if pc.ConnectTimeout != 7*time.Second {
		t.Errorf("connect timeout: got %v, want the URL's 7s", pc.ConnectTimeout)
	}
	cfg.URL = "postgres://snorky@127.0.0.1:5432/app"
	if pc, err = connConfig(cfg, false); err != nil {
		t.Fatal(err)
	}
	if pc.ConnectTimeout != 30*time.Second {
		t.Errorf("connect timeout: got %v, want the dead-link timeout 30s", pc.ConnectTimeout)
	}
}
