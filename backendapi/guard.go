package backendapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"io"
	"net/http"
	"strings"
	"time"
)

// keyOK compares the request's key with the configured one in constant
// time (of the SHA-256 digests, so the length of the key leaks nothing
// either). The key is read from X-Backend-Key, or, for /metrics scrapers,
// from "Authorization: Bearer <key>".
func (h *Handler) keyOK(r *http.Request) bool {
	key := r.Header.Get("X-Backend-Key")
	if key == "" {
		if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "Bearer ") {
			key = a[7:]
		}
	}
	got := sha256.Sum256([]byte(key))
	return subtle.ConstantTimeCompare(got[:], h.keyHash[:]) == 1
}

// guard requires the API key for next when Config.MetricsAuth is set.
func (h *Handler) guard(next http.Handler) http.Handler {
	if !h.cfg.MetricsAuth {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !h.keyOK(r) {
			h.authErr.Inc()
			w.Header().Set("WWW-Authenticate", `Bearer realm="snorky"`)
			writeJSON(w, http.StatusUnauthorized, errorBody("Missing or wrong API key (backend.metrics_auth): send X-Backend-Key or Authorization: Bearer"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// readBody reads a request body up to MaxBodyBytes, within BodyTimeout: the
// read deadline is set for the body and cleared after it, so that it never
// cancels the request's context while the reply is being made. After a
// failed read the connection is closed with the reply.
func (h *Handler) readBody(w http.ResponseWriter, r *http.Request) ([]byte, error) {
	rc := http.NewResponseController(w)
	if h.cfg.BodyTimeout > 0 {
		_ = rc.SetReadDeadline(time.Now().Add(h.cfg.BodyTimeout))
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, h.cfg.MaxBodyBytes))
	if err != nil {
		w.Header().Set("Connection", "close")
		return nil, err
	}
	if h.cfg.BodyTimeout > 0 {
		_ = rc.SetReadDeadline(time.Time{})
	}
	return body, nil
}
