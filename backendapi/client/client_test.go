package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/backendapi/client"
	"github.com/snorkyhq/snorky/backendapi/handofftest"
	"github.com/snorkyhq/snorky/cdc/pglocal/pgtest"
)

func TestMain(m *testing.M) { os.Exit(handofftest.Main(m)) }

// recorder is a backend endpoint that records the last request and
// answers reply.
type recorder struct {
	status int
	reply  string
	body   map[string]any
	header http.Header
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	rec.body = nil
	json.Unmarshal(b, &rec.body)
	rec.header = r.Header.Clone()
	if rec.status != 0 {
		w.WriteHeader(rec.status)
	}
	io.WriteString(w, rec.reply)
}

func newClient(t *testing.T, rec *recorder) *client.Client {
	t.Helper()
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	c, err := client.New(client.Config{URL: srv.URL + "/backend", APIKey: "k3y"})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func jsonOf(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestCalls(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		reply    string
		call     func(c *client.Client) (any, error)
		wantBody string
		want     string
	}{
		{
			name:  "authorizeSubscription without a transaction",
			reply: `{"service":"datasync_backend","message":{"type":"response","data":"tok"}}`,
			call: func(c *client.Client) (any, error) {
				return c.AuthorizeSubscription(ctx, nil, client.Item{Dealer: "AllTasks"})
			},
			wantBody: `{"message":{"command":"authorizeSubscription","params":{"items":[{"dealer":"AllTasks","query":null}]}},"service":"datasync_backend"}`,
			want:     `"tok"`,
		},
		{
			name:     "authorizeSubscription of no items",
			reply:    `{"service":"datasync_backend","message":{"type":"response","data":"tok"}}`,
			call:     func(c *client.Client) (any, error) { return c.AuthorizeSubscription(ctx, nil) },
			wantBody: `{"message":{"command":"authorizeSubscription","params":{"items":[]}},"service":"datasync_backend"}`,
			want:     `"tok"`,
		},
		{
			name:  "publishDeltas",
			reply: `{"service":"datasync_backend","message":{"type":"response","data":null}}`,
			call: func(c *client.Client) (any, error) {
				return nil, c.PublishDeltas(ctx, client.Delta{Type: "insert", Model: "Task", Data: map[string]any{"id": 3}},
					client.Delta{Type: "update", Model: "Task", NewData: map[string]any{"id": 3, "t": "b"}, OldData: map[string]any{"id": 3, "t": "a"}})
			},
			wantBody: `{"message":{"command":"publishDeltas","params":{"deltas":[{"data":{"id":3},"model":"Task","type":"insert"},{"model":"Task","newData":{"id":3,"t":"b"},"oldData":{"id":3,"t":"a"},"type":"update"}]}},"service":"datasync_backend"}`,
			want:     `null`,
		},
		{
			name:     "publish",
			reply:    `{"service":"pubsub_backend","message":{"type":"response","data":null}}`,
			call:     func(c *client.Client) (any, error) { return nil, c.Publish(ctx, map[string]int{"room": 1}, "hi") },
			wantBody: `{"message":{"command":"publish","params":{"channel":{"room":1},"message":"hi"}},"service":"pubsub_backend"}`,
			want:     `null`,
		},
		{
			name:     "authorizeIdentity with a ttl",
			reply:    `{"service":"identity_backend","message":{"type":"response","data":"idtok"}}`,
			call:     func(c *client.Client) (any, error) { return c.AuthorizeIdentity(ctx, "alice", 1500*time.Millisecond) },
			wantBody: `{"message":{"command":"authorizeIdentity","params":{"identity":"alice","ttl":2}},"service":"identity_backend"}`,
			want:     `"idtok"`,
		},
		{
			name:     "disconnectIdentity",
			reply:    `{"service":"identity_backend","message":{"type":"response","data":2}}`,
			call:     func(c *client.Client) (any, error) { return c.DisconnectIdentity(ctx, map[string]int{"user": 7}) },
			wantBody: `{"message":{"command":"disconnectIdentity","params":{"identity":{"user":7}}},"service":"identity_backend"}`,
			want:     `2`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := &recorder{reply: tt.reply}
			got, err := tt.call(newClient(t, rec))
			if err != nil {
				t.Fatalf("got error %v, want %s", err, tt.want)
			}
			if jsonOf(got) != tt.want {
				t.Errorf("result: got %s, want %s", jsonOf(got), tt.want)
			}
			if b := jsonOf(rec.body); b != tt.wantBody {
				t.Errorf("request: got %s, want %s", b, tt.wantBody)
			}
			if k := rec.header.Get("X-Backend-Key"); k != "k3y" {
				t.Errorf("X-Backend-Key: got %q, want k3y", k)
			}
			if ct := rec.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type: got %q, want application/json", ct)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		status int
		reply  string
		want   string
		is     error
	}{
		{"error reply", 0, `{"service":"datasync_backend","message":{"type":"error","callId":null,"message":"Snapshot too old"}}`, "datasync_backend.authorizeSubscription: Snapshot too old", client.ErrSnapshotTooOld},
		{"no such dealer", 0, `{"service":"datasync_backend","message":{"type":"error","callId":null,"message":"No such dealer"}}`, "No such dealer", client.ErrNoSuchDealer},
		{"wrong key", 401, `unauthorized`, "HTTP 401 (the API key differs from the server's backend.api_key)", nil},
		{"bad request", 400, `{"error":"Unknown service 'x'"}`, `HTTP 400: {"error":"Unknown service 'x'"}`, nil},
		{"not JSON", 0, `<html>`, "malformed reply", nil},
		{"not a token", 0, `{"service":"datasync_backend","message":{"type":"response","data":5}}`, "unexpected result 5", nil},
		{"empty token", 0, `{"service":"datasync_backend","message":{"type":"response","data":""}}`, "empty token", nil},
		{"no type", 0, `{"service":"datasync_backend","message":{}}`, "unexpected reply", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, &recorder{status: tt.status, reply: tt.reply})
			_, err := c.AuthorizeSubscription(ctx, nil, client.Item{Dealer: "AllTasks"})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error with %q", err, tt.want)
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("errors.Is(%v, %v) = false, want true", err, tt.is)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		c, _ := client.New(client.Config{URL: "http://" + handofftest.FreeAddr(t) + "/backend", APIKey: "k"})
		if _, err := c.AuthorizeIdentity(ctx, "a", 0); err == nil || !strings.Contains(err.Error(), "identity_backend.authorizeIdentity") {
			t.Fatalf("got %v, want an error naming the call", err)
		}
	})
	t.Run("nil identity", func(t *testing.T) {
		c := newClient(t, &recorder{})
		if _, err := c.AuthorizeIdentity(ctx, nil, 0); err == nil || !strings.Contains(err.Error(), "must not be nil") {
			t.Fatalf("got %v, want an error", err)
		}
	})
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg  client.Config
		want string
	}{
		{client.Config{URL: "http://127.0.0.1:5002/backend", APIKey: "k"}, ""},
		{client.Config{APIKey: "k"}, "URL is required"},
		{client.Config{URL: "ws://127.0.0.1:5002/backend", APIKey: "k"}, "not an http"},
		{client.Config{URL: "http://127.0.0.1:5002/backend"}, "APIKey is required"},
	}
	for _, tt := range tests {
		_, err := client.New(tt.cfg)
		if tt.want == "" && err != nil || tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)) {
			t.Errorf("New(%+v): got %v, want %q", tt.cfg, err, tt.want)
		}
	}
}

func TestSnapshotNeedsRepeatableRead(t *testing.T) {
	ctx := context.Background()
	db, err := pgx.Connect(ctx, pgtest.NewDatabase(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close(ctx)
	rec := &recorder{reply: `{"service":"datasync_backend","message":{"type":"response","data":"tok"}}`}
	c := newClient(t, rec)
	for _, iso := range []pgx.TxIsoLevel{pgx.ReadCommitted, pgx.RepeatableRead, pgx.Serializable} {
		t.Run(string(iso), func(t *testing.T) {
			rec.body = nil
			err := pgx.BeginTxFunc(ctx, db, pgx.TxOptions{IsoLevel: iso}, func(tx pgx.Tx) error {
				_, err := c.AuthorizeSubscription(ctx, tx, client.Item{Dealer: "AllTasks"})
				return err
			})
			if iso == pgx.ReadCommitted {
				if err == nil || !strings.Contains(err.Error(), "REPEATABLE READ") {
					t.Fatalf("got %v, want an error asking for REPEATABLE READ", err)
				}
				if rec.body != nil {
					t.Errorf("the server was called: %v", rec.body)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			params := rec.body["message"].(map[string]any)["params"].(map[string]any)
			if s, _ := params["snapshot"].(string); len(strings.Split(s, ":")) != 3 {
				t.Errorf("snapshot: got %v, want xmin:xmax:xip-list", params["snapshot"])
			}
		})
	}
}

func TestSubscribeRequested(t *testing.T) {
	for value, want := range map[string]bool{"Subscribe": true, " subscribe ": true, "SUBSCRIBE": true, "": false, "no": false} {
		r := httptest.NewRequest("GET", "/api/tasks", nil)
		if value != "" {
			r.Header.Set(client.SubscribeHeader, value)
		}
		if got := client.SubscribeRequested(r); got != want {
			t.Errorf("X-Snorky: %q: got %v, want %v", value, got, want)
		}
	}
}

// TestHandoff is the D8 contract through this package against a real
// server: while a writer commits about 500 single-row changes per second,
// 1,000 list queries with AuthorizeSubscription in the same REPEATABLE
// READ transaction, each followed by the acquire of its token: every
// collection (list plus deltas) equals the table, none lost or doubled.
func TestHandoff(t *testing.T) {
	srv := handofftest.StartServer(t, handofftest.Options{})
	ctx := context.Background()
	const workers = 4
	conns := make(chan *pgx.Conn, workers)
	for range workers {
		conn, err := pgx.Connect(ctx, srv.DatabaseURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		conns <- conn
	}
	c, err := client.New(client.Config{URL: srv.BackendURL, APIKey: handofftest.APIKey})
	if err != nil {
		t.Fatal(err)
	}
	w := handofftest.StartWriter(t, srv.DatabaseURL, 500, 200)
	res := handofftest.Check(t, srv, w, 1000, workers, func(ctx context.Context) (rows []handofftest.Row, token string, err error) {
		conn := <-conns
		defer func() { conns <- conn }()
		err = pgx.BeginTxFunc(ctx, conn, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			var list []byte
			if err := tx.QueryRow(ctx, `SELECT coalesce(jsonb_agg(to_jsonb(i)), '[]') FROM items i`).Scan(&list); err != nil {
				return err
			}
			if err := json.Unmarshal(list, &rows); err != nil {
				return err
			}
			token, err = c.AuthorizeSubscription(ctx, tx, client.Item{Dealer: "AllItems"})
			return err
		})
		return rows, token, err
	})
	w.Stop(t)
	handofftest.VerifyTable(t, srv.DatabaseURL, w)
	t.Log(res)
	if res.Handoffs != 1000 || res.Lost != 0 || res.Doubled != 0 {
		t.Errorf("got %v, want 1000 handoffs, 0 lost, 0 doubled", res)
	}
}
