// Package backendapi is the backend HTTP transport (spec §4): the Snorky
// envelope endpoint for the web application, guarded by an API key, plus
// /healthz, /readyz and /metrics.
//
// Every request is one envelope and gets one reply. Malformed input answers
// 400 with a JSON body {"error": "..."} (D1), a body over the limit 413, and
// RPC errors are HTTP 200 with the error envelope.
package backendapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/snorkyhq/snorky/sync/rpc"
)

// Config configures the backend endpoint.
type Config struct {
	// Path of the envelope endpoint; default "/backend".
	Path string
	// APIKey is required in the X-Backend-Key header. It must not be empty.
	APIKey string
	// MaxBodyBytes bounds a request body; default 1 MiB.
	MaxBodyBytes int64
	// Pprof serves Go's profiler at /debug/pprof/ (off by default).
	Pprof bool
	// MetricsAuth makes /metrics and /debug/pprof/ require the API key, in
	// X-Backend-Key or as "Authorization: Bearer <key>".
	MetricsAuth bool
	// BodyTimeout bounds the reading of a request body (a client trickling
	// it is cut); 0 means no bound.
	BodyTimeout time.Duration
}

// Validate reports the first invalid field. Errors name the field.
func (c Config) Validate() error {
	if c.APIKey == "" {
		return errors.New("APIKey: must be set: the backend API refuses to run without a key")
	}
	if c.Path != "" && c.Path[0] != '/' {
		return errors.New("Path: must start with /")
	}
	if c.MaxBodyBytes < 0 {
		return errors.New("MaxBodyBytes: must be positive")
	}
	return nil
}

// withDefaults returns c with each zero field that has a default set to
// it (Path, MaxBodyBytes).
func (c Config) withDefaults() Config {
	if c.Path == "" {
		c.Path = "/backend"
	}
	if c.MaxBodyBytes == 0 {
		c.MaxBodyBytes = 1 << 20
	}
	return c
}

// ReadyFunc reports whether a part of the server is ready; a non-nil error
// says why not.
type ReadyFunc func() error

// Handler serves the backend listener.
type Handler struct {
	cfg     Config
	keyHash [32]byte
	reg     *rpc.Registry
	log     *slog.Logger
	mux     *http.ServeMux
	ready   map[string]ReadyFunc
	details map[string]func() any
	authErr prometheus.Counter
}

// New returns the handler. gatherer serves /metrics; ready checks back
// /readyz (each by name).
func New(cfg Config, reg *rpc.Registry, log *slog.Logger, mreg prometheus.Registerer, gatherer prometheus.Gatherer, ready map[string]ReadyFunc) (*Handler, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	h := &Handler{
		cfg:     cfg,
		keyHash: sha256.Sum256([]byte(cfg.APIKey)),
		reg:     reg,
		log:     log,
		mux:     http.NewServeMux(),
		ready:   ready,
		authErr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "snorky_backend_auth_failures_total",
			Help: "Backend API requests refused for a missing or wrong X-Backend-Key.",
		}),
	}
	if mreg != nil {
		if err := mreg.Register(h.authErr); err != nil {
			return nil, err
		}
	}
	h.mux.HandleFunc(cfg.Path, h.serveEnvelope)
	h.mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	h.mux.HandleFunc("/readyz", h.serveReady)
	if cfg.Pprof {
		h.mux.Handle("/debug/pprof/", h.guard(http.HandlerFunc(pprof.Index)))
		h.mux.Handle("/debug/pprof/profile", h.guard(http.HandlerFunc(pprof.Profile)))
		h.mux.Handle("/debug/pprof/symbol", h.guard(http.HandlerFunc(pprof.Symbol)))
		h.mux.Handle("/debug/pprof/trace", h.guard(http.HandlerFunc(pprof.Trace)))
	}
	if gatherer != nil {
		h.mux.Handle("/metrics", h.guard(promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})))
	}
	return h, nil
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// SetDetail adds f's value to /readyz's answer under "detail"/name (for
// example the replay window's span). Call it before serving.
func (h *Handler) SetDetail(name string, f func() any) {
	if h.details == nil {
		h.details = map[string]func() any{}
	}
	h.details[name] = f
}

func (h *Handler) serveReady(w http.ResponseWriter, r *http.Request) {
	problems := map[string]string{}
	for name, f := range h.ready {
		if err := f(); err != nil {
			problems[name] = err.Error()
		}
	}
	body := map[string]any{"status": "ready"}
	if len(h.details) > 0 {
		detail := map[string]any{}
		for name, f := range h.details {
			detail[name] = f()
		}
		body["detail"] = detail
	}
	if len(problems) > 0 {
		body["status"], body["problems"] = "not ready", problems
		writeJSON(w, http.StatusServiceUnavailable, body)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func (h *Handler) serveEnvelope(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, errorBody("Method not allowed: use POST"))
		return
	}
	got := sha256.Sum256([]byte(r.Header.Get("X-Backend-Key")))
	if subtle.ConstantTimeCompare(got[:], h.keyHash[:]) != 1 {
		h.authErr.Inc()
		writeJSON(w, http.StatusUnauthorized, errorBody("Missing or wrong X-Backend-Key header"))
		return
	}
	body, err := h.readBody(w, r) // guard.go
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeJSON(w, http.StatusRequestEntityTooLarge, errorBody("Request body over the limit of "+strconv.FormatInt(h.cfg.MaxBodyBytes, 10)+" bytes"))
			return
		}
		writeJSON(w, http.StatusBadRequest, errorBody("Reading the request body: "+err.Error()))
		return
	}
	call, derr := h.reg.Decode(body)
	if derr != nil {
		writeJSON(w, http.StatusBadRequest, errorBody(derr.Message))
		return
	}
	reply := h.reg.Run(&requestConn{id: rpc.NewConnID()}, call)
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(http.StatusOK)
	w.Write(reply)
}

func errorBody(msg string) map[string]string { return map[string]string{"error": msg} }

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	w.Write(b)
}

// requestConn is the connection of one backend request: it has no identity
// and receives no notifications.
type requestConn struct {
	id       uint64
	identity atomic.Pointer[rpc.Identity]
}

func (c *requestConn) ID() uint64                        { return c.id }
func (c *requestConn) Send([]byte)                       {}
func (c *requestConn) SendLatest(string, []byte)         {}
func (c *requestConn) Identity() *rpc.Identity           { return c.identity.Load() }
func (c *requestConn) SetIdentity(id *rpc.Identity) bool { return c.identity.CompareAndSwap(nil, id) }
func (c *requestConn) Close(int, string)                 {}
