package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"

	"github.com/snorkyhq/snorky/wsapi"
)

// validateExtras checks the frontend keys of the JavaScript client's
// listener additions: frontend.sockjs_path and frontend.static_dir.
func (c FrontendConfig) validateExtras() error {
	if p := c.SockJSPath; p != "" {
		if p[0] != '/' || p == "/" {
			return fmt.Errorf("frontend.sockjs_path: %q must start with / and name a prefix, e.g. /sockjs (empty: no SockJS)", p)
		}
		if strings.TrimSuffix(p, "/") == strings.TrimSuffix(c.Path, "/") {
			return fmt.Errorf("frontend.sockjs_path: %q is frontend.path; choose another prefix", p)
		}
	}
	if d := c.StaticDir; d != "" {
		st, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("frontend.static_dir: %w", err)
		}
		if !st.IsDir() {
			return fmt.Errorf("frontend.static_dir: %s is not a directory", d)
		}
	}
	return nil
}

// mountFrontend adds to the frontend listener's mux what sits beside the
// WebSocket endpoint: the JavaScript client (/snorky.js, /snorky.mjs), the
// SockJS endpoints under frontend.sockjs_path, and the files of
// frontend.static_dir at /.
func (s *server) mountFrontend(mux *http.ServeMux) {
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
func (s *server) shutdownSockJS(ctx context.Context) {
	if s.sockjs == nil {
		return
	}
	if err := s.sockjs.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		s.log.Warn("closing SockJS sessions timed out", "err", err)
	}
}
