// Package todomvc is the TodoMVC example of Snorky: a small web application
// whose list of tasks stays current in every open window.
//
// The Handler serves the page (index.html, app.js and style.css, embedded)
// and a REST API over the tasks table that behaves like the original
// Snorky's Django REST Framework helpers (spec §6):
//
//	GET    /api/tasks          the list; with "X-Snorky: Subscribe" also the
//	                           header X-Subscription-Token
//	POST   /api/tasks          {"title": …, "completed": …} → 201 and the row
//	PATCH  /api/tasks          {"completed": bool} sets every task (toggle all)
//	DELETE /api/tasks?completed=true   deletes the completed tasks
//	PATCH  /api/tasks/{id}     {"title"?: …, "completed"?: …} → the row
//	DELETE /api/tasks/{id}     → 204
//	GET    /config.js          tells the page where the WebSocket is
//
// Writes are plain SQL: the handler never calls publishDeltas, because the
// Snorky server reads the committed changes from PostgreSQL's WAL and sends
// them to every subscribed page. The list view runs its query and
// AuthorizeSubscription of the Go backend helper (backendapi/client) in one
// REPEATABLE READ transaction; the helper authorises the subscription with
// that transaction's pg_current_snapshot() (D8), so a page applies every
// change its list did not show, exactly once.
//
// The page speaks the Snorky wire protocol itself over a WebSocket: it
// fetches the list with "X-Snorky: Subscribe", acquires the subscription
// with the token, applies the deltas, and after a disconnection fetches
// again for a new token.
package todomvc

import (
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5"
	"github.com/snorkyhq/snorky/backendapi/client"
)

// Schema creates the table the example works on.
const Schema = `CREATE TABLE IF NOT EXISTS tasks (
	id         bigserial PRIMARY KEY,
	title      text NOT NULL,
	completed  bool NOT NULL DEFAULT false,
	created_at timestamptz DEFAULT now()
)`

// MaxTitleBytes bounds a task's title.
const MaxTitleBytes = 1000

const maxBodyBytes = 64 << 10

//go:embed static
var static embed.FS

// Config configures a Handler.
type Config struct {
	// DatabaseURL is the PostgreSQL database holding the tasks table.
	// Required.
	DatabaseURL string
	// BackendURL is the Snorky backend endpoint, e.g.
	// http://127.0.0.1:5002/backend. Required.
	BackendURL string
	// APIKey is sent as X-Backend-Key. Required.
	APIKey string
	// WebSocketURL is the Snorky frontend the page connects to, e.g.
	// ws://127.0.0.1:5001/ws. Required unless WebSocketPath is set.
	WebSocketURL string
	// WebSocketPath, instead of WebSocketURL, makes the page connect to
	// this path on its own host and port (ws:// or wss:// as the page),
	// for a page served behind a proxy that also forwards the WebSocket,
	// e.g. "/ws".
	WebSocketPath string
	// Dealer is the dealer the list subscribes to. Default "AllTasks".
	Dealer string
	// Service is the backend DataSync service name. Default
	// "datasync_backend".
	Service string
	// Client makes the backend calls. Nil: a client with a 10 s timeout.
	Client *http.Client
	// Log receives errors. Nil: discarded.
	Log *slog.Logger
}

// Validate reports the first missing or malformed field.
func (c *Config) Validate() error {
	switch {
	case c.DatabaseURL == "":
		return errors.New("todomvc: DatabaseURL is required")
	case c.BackendURL == "":
		return errors.New("todomvc: BackendURL is required")
	case c.APIKey == "":
		return errors.New("todomvc: APIKey is required")
	case c.WebSocketURL == "" && c.WebSocketPath == "":
		return errors.New("todomvc: WebSocketURL (or WebSocketPath) is required")
	case c.WebSocketURL != "" && c.WebSocketPath != "":
		return errors.New("todomvc: set WebSocketURL or WebSocketPath, not both")
	case c.WebSocketPath != "" && !strings.HasPrefix(c.WebSocketPath, "/"):
		return fmt.Errorf("todomvc: WebSocketPath %q does not start with /", c.WebSocketPath)
	}
	if c.WebSocketURL != "" {
		u, err := url.Parse(c.WebSocketURL)
		if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
			return fmt.Errorf("todomvc: WebSocketURL %q is not a ws:// or wss:// URL", c.WebSocketURL)
		}
	}
	if _, err := pgx.ParseConfig(c.DatabaseURL); err != nil {
		return fmt.Errorf("todomvc: DatabaseURL: %w", err)
	}
	return nil
}

// Handler serves the page and the REST API. It holds one database
// connection, opened on first use and reopened after it breaks; requests
// take turns on it.
type Handler struct {
	cfg    Config
	snorky *client.Client
	log    *slog.Logger
	mux    *http.ServeMux
	config []byte // /config.js

	mu   sync.Mutex
	conn *pgx.Conn
}

// New returns the handler of cfg.
func New(cfg Config) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Dealer == "" {
		cfg.Dealer = "AllTasks"
	}
	if cfg.Service == "" {
		cfg.Service = "datasync_backend"
	}
	if cfg.Client == nil {
		cfg.Client = &http.Client{Timeout: 10 * time.Second}
	}
	snorky, err := client.New(client.Config{URL: cfg.BackendURL, APIKey: cfg.APIKey, DataSyncService: cfg.Service, HTTPClient: cfg.Client})
	if err != nil {
		return nil, fmt.Errorf("todomvc: %w", err)
	}
	h := &Handler{cfg: cfg, snorky: snorky, log: cfg.Log}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	if cfg.WebSocketPath != "" {
		path, _ := json.Marshal(cfg.WebSocketPath)
		h.config = []byte(`window.SNORKY_TODOMVC = {"url": (location.protocol === "https:" ? "wss://" : "ws://") + location.host + ` + string(path) + "};\n")
	} else {
		pageCfg, _ := json.Marshal(map[string]string{"url": cfg.WebSocketURL})
		h.config = []byte("window.SNORKY_TODOMVC = " + string(pageCfg) + ";\n")
	}

	files, _ := fs.Sub(static, "static")
	h.mux = http.NewServeMux()
	h.mux.Handle("GET /", http.FileServerFS(files))
	h.mux.HandleFunc("GET /config.js", h.serveConfig)
	h.mux.HandleFunc("GET /api/tasks", h.list)
	h.mux.HandleFunc("POST /api/tasks", h.create)
	h.mux.HandleFunc("PATCH /api/tasks", h.updateAll)
	h.mux.HandleFunc("DELETE /api/tasks", h.deleteCompleted)
	h.mux.HandleFunc("PATCH /api/tasks/{id}", h.update)
	h.mux.HandleFunc("DELETE /api/tasks/{id}", h.delete)
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mux.ServeHTTP(w, r)
}

// Close closes the database connection.
func (h *Handler) Close(ctx context.Context) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn == nil {
		return nil
	}
	err := h.conn.Close(ctx)
	h.conn = nil
	return err
}

func (h *Handler) serveConfig(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(h.config)
}

// withConn runs f on the handler's connection, opening it when needed.
func (h *Handler) withConn(ctx context.Context, f func(*pgx.Conn) error) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.conn == nil || h.conn.IsClosed() {
		cc, err := pgx.ParseConfig(h.cfg.DatabaseURL)
		if err != nil {
			return err
		}
		// Rows as the Snorky server sends them (spec §3.8): UTC timestamps.
		cc.RuntimeParams["timezone"] = "UTC"
		if h.conn, err = pgx.ConnectConfig(ctx, cc); err != nil {
			h.conn = nil
			return fmt.Errorf("connecting to PostgreSQL: %w", err)
		}
	}
	return f(h.conn)
}

// listQuery returns the tasks as a JSON array, each row as to_jsonb makes it
// (the shape of the deltas).
const listQuery = `SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.id), '[]') FROM tasks t`

func (h *Handler) list(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	if !client.SubscribeRequested(r) {
		var rows []byte
		err := h.withConn(ctx, func(c *pgx.Conn) error { return c.QueryRow(ctx, listQuery).Scan(&rows) })
		if err != nil {
			h.fail(w, "listing tasks", err)
			return
		}
		writeJSON(w, http.StatusOK, rows)
		return
	}
	rows, token, err := h.listSubscribed(ctx)
	if err != nil {
		h.fail(w, "subscribing to tasks", err)
		return
	}
	w.Header().Set(client.TokenHeader, token)
	writeJSON(w, http.StatusOK, rows)
}

// listSubscribed runs the list query and authorises a subscription that
// receives exactly the changes the query did not see.
func (h *Handler) listSubscribed(ctx context.Context) (rows []byte, token string, err error) {
	item := client.Item{Dealer: h.cfg.Dealer}
	err = h.withConn(ctx, func(c *pgx.Conn) error {
		return pgx.BeginTxFunc(ctx, c, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly}, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, listQuery).Scan(&rows); err != nil {
				return err
			}
			// In the same transaction: the helper passes its snapshot.
			if token, err = h.snorky.AuthorizeSubscription(ctx, tx, item); err != nil {
				return upstreamError{err}
			}
			return nil
		})
	})
	if errors.Is(err, client.ErrSnapshotTooOld) || errors.Is(err, client.ErrNoDatabase) {
		// The original rule (spec §3.7): authorise first, then query; a
		// change may then arrive both in the list and as a delta, which
		// the page tolerates (an insert of a known id is an update).
		h.log.Warn("todomvc: snapshot refused; authorising before the query instead", "err", err)
		if token, err = h.snorky.AuthorizeSubscription(ctx, nil, item); err != nil {
			return nil, "", upstreamError{err}
		}
		err = h.withConn(ctx, func(c *pgx.Conn) error { return c.QueryRow(ctx, listQuery).Scan(&rows) })
	}
	if err != nil {
		return nil, "", err
	}
	return rows, token, nil
}

// upstreamError marks a failure of the Snorky backend (HTTP 502).
type upstreamError struct{ err error }

func (e upstreamError) Error() string { return e.err.Error() }
func (e upstreamError) Unwrap() error { return e.err }

// taskInput is the body of POST and PATCH; absent fields stay nil.
type taskInput struct {
	Title     *string `json:"title"`
	Completed *bool   `json:"completed"`
}

func readInput(w http.ResponseWriter, r *http.Request) (taskInput, error) {
	var in taskInput
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return in, fmt.Errorf("the body is not a task: %v", err)
	}
	if in.Title != nil {
		t := strings.TrimSpace(*in.Title)
		switch {
		case t == "":
			return in, errors.New("title must not be empty")
		case len(t) > MaxTitleBytes:
			return in, fmt.Errorf("title is longer than %d bytes", MaxTitleBytes)
		case !utf8.ValidString(t):
			return in, errors.New("title is not valid UTF-8")
		}
		in.Title = &t
	}
	return in, nil
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request) {
	in, err := readInput(w, r)
	if err == nil && in.Title == nil {
		err = errors.New("title is required")
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	completed := in.Completed != nil && *in.Completed
	ctx := r.Context()
	var row []byte
	err = h.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `INSERT INTO tasks (title, completed) VALUES ($1, $2) RETURNING to_jsonb(tasks)`, *in.Title, completed).Scan(&row)
	})
	if err != nil {
		h.fail(w, "creating a task", err)
		return
	}
	writeJSON(w, http.StatusCreated, row)
}

func (h *Handler) update(w http.ResponseWriter, r *http.Request) {
	id, ok := taskID(w, r)
	if !ok {
		return
	}
	in, err := readInput(w, r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx := r.Context()
	var row []byte
	err = h.withConn(ctx, func(c *pgx.Conn) error {
		return c.QueryRow(ctx, `UPDATE tasks SET title = coalesce($2, title), completed = coalesce($3, completed)
			WHERE id = $1 RETURNING to_jsonb(tasks)`, id, in.Title, in.Completed).Scan(&row)
	})
	if errors.Is(err, pgx.ErrNoRows) {
		writeError(w, http.StatusNotFound, "no such task")
		return
	}
	if err != nil {
		h.fail(w, "updating a task", err)
		return
	}
	writeJSON(w, http.StatusOK, row)
}

func (h *Handler) delete(w http.ResponseWriter, r *http.Request) {
	id, ok := taskID(w, r)
	if !ok {
		return
	}
	ctx := r.Context()
	var n int64
	err := h.withConn(ctx, func(c *pgx.Conn) error {
		tag, err := c.Exec(ctx, `DELETE FROM tasks WHERE id = $1`, id)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		h.fail(w, "deleting a task", err)
		return
	}
	if n == 0 {
		writeError(w, http.StatusNotFound, "no such task")
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// updateAll sets completed on every task (TodoMVC's "toggle all").
func (h *Handler) updateAll(w http.ResponseWriter, r *http.Request) {
	in, err := readInput(w, r)
	if err == nil && (in.Completed == nil || in.Title != nil) {
		err = errors.New(`the body must be {"completed": true} or {"completed": false}`)
	}
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx := r.Context()
	var n int64
	err = h.withConn(ctx, func(c *pgx.Conn) error {
		tag, err := c.Exec(ctx, `UPDATE tasks SET completed = $1 WHERE completed <> $1`, *in.Completed)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		h.fail(w, "updating the tasks", err)
		return
	}
	writeJSON(w, http.StatusOK, fmt.Appendf(nil, `{"updated":%d}`, n))
}

// deleteCompleted deletes the completed tasks (TodoMVC's "Clear
// completed"); the query parameter guards against deleting by mistake.
func (h *Handler) deleteCompleted(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("completed") != "true" {
		writeError(w, http.StatusBadRequest, "only DELETE /api/tasks?completed=true is supported")
		return
	}
	ctx := r.Context()
	var n int64
	err := h.withConn(ctx, func(c *pgx.Conn) error {
		tag, err := c.Exec(ctx, `DELETE FROM tasks WHERE completed`)
		n = tag.RowsAffected()
		return err
	})
	if err != nil {
		h.fail(w, "deleting the completed tasks", err)
		return
	}
	writeJSON(w, http.StatusOK, fmt.Appendf(nil, `{"deleted":%d}`, n))
}

func taskID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, http.StatusNotFound, "no such task")
		return 0, false
	}
	return id, true
}

// fail answers 502 for a backend failure and 500 for anything else, and
// logs the cause.
func (h *Handler) fail(w http.ResponseWriter, what string, err error) {
	h.log.Error("todomvc: "+what, "err", err)
	if errors.As(err, new(upstreamError)) {
		writeError(w, http.StatusBadGateway, what+": "+err.Error())
		return
	}
	writeError(w, http.StatusInternalServerError, what+" failed")
}

func writeJSON(w http.ResponseWriter, status int, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(body)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	b, _ := json.Marshal(map[string]string{"error": msg})
	writeJSON(w, status, b)
}
