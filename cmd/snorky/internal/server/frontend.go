package server

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strings"
	"time"

	"github.com/snorkyhq/snorky/wsapi"
)

// mountFrontend adds to the frontend listener's mux what sits beside the
// WebSocket endpoint: the JavaScript client (/snorky.js, /snorky.mjs), the
// SockJS endpoints under frontend.sockjs_path, and the files of
// frontend.static_dir at /.
func (s *Server) mountFrontend(mux *http.ServeMux) {
	wsapi.MountClient(mux)
	if p := strings.TrimSuffix(s.cfg.Frontend.SockJSPath, "/"); p != "" {
		s.sockjs = wsapi.NewSockJS(s.ws, p)
		mux.Handle(p+"/", s.sockjs)
	}
	if d := s.cfg.Frontend.StaticDir; d != "" {
		mux.Handle("/", http.FileServer(http.Dir(d)))
	}
}

// shutdownSockJS closes the SockJS sessions with 1001 (step 2 of the
// shutdown, beside the WebSockets).
func (s *Server) shutdownSockJS(ctx context.Context) {
	if s.sockjs == nil {
		return
	}
	if err := s.sockjs.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		s.log.Warn("closing SockJS sessions timed out", "err", err)
	}
}

// httpServer returns the HTTP server of a listener with the limits'
// timeouts. There is no server-wide ReadTimeout: net/http cancels a
// request's context when it passes, which would cut SockJS's streaming
// transports and pprof's profiles; the backend API bounds the reading of
// each request body instead (backendapi.Config.BodyTimeout,
// limits.http_read_timeout).
func (s *Server) httpServer(h http.Handler) *http.Server {
	l := s.cfg.Limits
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: l.HTTPReadHeaderTimeout,
		IdleTimeout:       l.HTTPIdleTimeout,
		MaxHeaderBytes:    int(l.HTTPMaxHeaderBytes),
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// noCap maps a count or size limit of the file, where 0 means no cap (as
// for limits.max_connections), to a package that reads 0 as its default.
func noCap(n int) int {
	if n == 0 {
		return math.MaxInt
	}
	return n
}

// zeroDisables maps a duration of the file where 0 means off
// (limits.idle_timeout, frontend.ping_interval as in spec §1.1) to wsapi's,
// which reads 0 as its default and a negative value as off. The file's
// default comes from config's defaults.
func zeroDisables(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
