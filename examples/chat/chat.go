// Package chat is Snorky's collaboration example: a page where people
// chat in a room, see who is there (presence) and see each other's mouse
// pointers on a shared board (Cursors), all over one WebSocket.
//
// Chat and Cursors need to know who a connection is. This package is the
// tiny backend that says so: POST /api/identity {"name": "alice"} asks the
// Snorky server (backend API, authorizeIdentity) for an identity token and
// returns {"url": "ws://…/ws?token=…"}; the page connects to that URL. A
// real application would take the identity from its own session instead of
// trusting a typed name.
//
// The page (static/) speaks the Snorky wire protocol directly: chat join,
// send and presence notifications; cursors join, createCursor,
// updateCursor and the cursorAdded/Updated/Removed notifications.
package chat

import (
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"time"

	"github.com/snorkyhq/snorky/backendapi/client"
)

//go:embed static
var static embed.FS

// Config configures a Handler.
type Config struct {
	// BackendURL is the Snorky backend endpoint, e.g.
	// http://127.0.0.1:5002/backend. Required.
	BackendURL string
	// APIKey is the server's backend.api_key. Required.
	APIKey string
	// WebSocketURL is the Snorky frontend the page connects to, e.g.
	// ws://127.0.0.1:5001/ws. Required.
	WebSocketURL string
	// IdentityTTL is the lifetime of the identity tokens; default 1 h.
	IdentityTTL time.Duration
	// Log receives errors. Nil: discarded.
	Log *slog.Logger
}

// Handler serves the page and the identity endpoint.
type Handler struct {
	cfg    Config
	snorky *client.Client
	log    *slog.Logger
	mux    *http.ServeMux
}

// New returns the handler of cfg.
func New(cfg Config) (*Handler, error) {
	u, err := url.Parse(cfg.WebSocketURL)
	if err != nil || (u.Scheme != "ws" && u.Scheme != "wss") || u.Host == "" {
		return nil, fmt.Errorf("chat: WebSocketURL %q is not a ws:// or wss:// URL", cfg.WebSocketURL)
	}
	c, err := client.New(client.Config{URL: cfg.BackendURL, APIKey: cfg.APIKey})
	if err != nil {
		return nil, fmt.Errorf("chat: %w", err)
	}
	if cfg.IdentityTTL == 0 {
		cfg.IdentityTTL = time.Hour
	}
	h := &Handler{cfg: cfg, snorky: c, log: cfg.Log, mux: http.NewServeMux()}
	if h.log == nil {
		h.log = slog.New(slog.DiscardHandler)
	}
	files, _ := fs.Sub(static, "static")
	h.mux.Handle("GET /", http.FileServerFS(files))
	h.mux.HandleFunc("POST /api/identity", h.identity)
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// validName is what the example accepts as a name.
var validName = regexp.MustCompile(`^[\p{L}\p{N} _.-]{1,32}$`)

func (h *Handler) identity(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 4096)).Decode(&in); err != nil || !validName.MatchString(in.Name) {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "name: 1 to 32 letters, digits, spaces, dots, dashes or underscores"})
		return
	}
	token, err := h.snorky.AuthorizeIdentity(r.Context(), in.Name, h.cfg.IdentityTTL)
	if err != nil {
		h.log.Error("chat: authorizeIdentity", "err", err)
		var se *client.Error
		status := http.StatusBadGateway
		if errors.As(err, &se) {
			status = http.StatusInternalServerError
		}
		writeJSON(w, status, map[string]string{"error": "the Snorky server refused the identity: " + err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"url": h.cfg.WebSocketURL + "?token=" + url.QueryEscape(token), "name": in.Name})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}
