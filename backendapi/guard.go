package backendapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"strings"
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
